"""Change metrics and block bootstrap against small cases counted by hand."""

import numpy as np
import pytest

from ai4land.evaluate.bootstrap import BlockBootstrap, compare_to_baselines
from ai4land.evaluate.change import (
    CATEGORIES,
    CORRECT_REJECTION,
    FALSE_ALARM,
    HIT,
    MISS,
    NOT_SCORED,
    WRONG_HIT,
    change_categories,
    change_counts,
    change_summary,
    figure_of_merit,
    producers_accuracy,
    users_accuracy,
)
from ai4land.evaluate.interface import Chunk
from ai4land.evaluate.metrics import (
    ChangeCounts,
    ChangeFigureOfMerit,
    ChangeIoU,
    OverallAccuracy,
    PeriodChange,
)

# a 4x4 map: start, observed end, predicted end (class codes), and the category of each
START = np.array([[1, 1, 2, 2],
                  [1, 1, 2, 2],
                  [3, 3, 3, 3],
                  [3, 3, 3, 3]], dtype="uint8")
OBSERVED = np.array([[1, 2, 2, 2],
                     [1, 3, 2, 1],
                     [3, 3, 1, 1],
                     [3, 3, 3, 3]], dtype="uint8")
PREDICTED = np.array([[1, 2, 1, 2],
                      [1, 2, 2, 3],
                      [3, 1, 1, 3],
                      [3, 3, 3, 3]], dtype="uint8")
C, H, M, F, W = CORRECT_REJECTION, HIT, MISS, FALSE_ALARM, WRONG_HIT
EXPECTED = np.array([[C, H, F, C],
                     [C, W, C, W],
                     [C, F, H, M],
                     [C, C, C, C]])


def test_categories_of_a_4x4_map_counted_by_hand():
    np.testing.assert_array_equal(change_categories(START, OBSERVED, PREDICTED), EXPECTED)
    counts = change_counts(START, OBSERVED, PREDICTED)
    # 9 correct rejections, hits 2, misses 1, false alarms 2, wrong hits 2
    assert dict(zip(CATEGORIES, counts.tolist(), strict=True)) == {
        "correct_rejection": 9, "hit": 2, "miss": 1, "false_alarm": 2, "wrong_hit": 2}
    assert figure_of_merit(counts) == pytest.approx(2 / 7)
    assert producers_accuracy(counts) == pytest.approx(2 / 5)
    assert users_accuracy(counts) == pytest.approx(2 / 6)
    summary = change_summary(counts)
    assert summary["fom"] == pytest.approx(2 / 7) and summary["counts"]["hit"] == 2


def test_valid_mask_and_negative_indices_are_not_scored():
    valid = np.ones((4, 4), dtype=bool)
    valid[0, 1] = False  # a hit
    categories = change_categories(START, OBSERVED, PREDICTED, valid)
    assert categories[0, 1] == NOT_SCORED
    assert change_counts(START, OBSERVED, PREDICTED, valid)[HIT] == 1
    predicted = PREDICTED.astype("int64")
    predicted[2, 2] = -1  # the other hit: no class
    assert change_counts(START, OBSERVED, predicted, valid)[HIT] == 0


def test_counts_by_label_add_up_to_the_total_and_the_period_metric_streams():
    labels = np.repeat([[0, 0, 1, 1]], 4, axis=0)
    labels[3] = -1
    by_block = change_counts(START, OBSERVED, PREDICTED, labels=labels, n_labels=2)
    assert by_block.shape == (2, 5)
    assert by_block[:, HIT].tolist() == [1, 1] and by_block[:, WRONG_HIT].tolist() == [1, 1]
    # the whole-period change metric, two chunks of rows merged: the counts of the whole
    period = PeriodChange()
    for rows in (slice(0, 2), slice(2, 4)):
        part = PeriodChange()
        part.accumulate(Chunk(year=2000, target=OBSERVED[rows], prediction=PREDICTED[rows],
                              labels=np.zeros((2, 4), "int64"), n_blocks=1, n_classes=4,
                              start=START[rows]))
        period.merge(part)
    np.testing.assert_array_equal(period.blocks[0], change_counts(START, OBSERVED, PREDICTED))
    np.testing.assert_array_equal(by_block.sum(0) + [4, 0, 0, 0, 0], period.blocks[0])
    assert period.result()["producers_accuracy"] == pytest.approx(2 / 5)


def test_ratios_vectorise_and_are_undefined_without_change():
    counts = np.array([[10, 0, 0, 0, 0], [0, 1, 1, 1, 1]])
    fom = figure_of_merit(counts)
    assert np.isnan(fom[0]) and fom[1] == pytest.approx(1 / 4)
    assert change_summary(counts[0])["fom"] is None
    with pytest.raises(ValueError, match="last axis of 5"):
        figure_of_merit(np.ones(4))


def test_year_change_metrics_share_the_categories():
    index = lambda a: a.astype("int64") - 1  # noqa: E731 - class codes 1..3 as indices
    chunk = Chunk(year=2000, target=index(OBSERVED), prediction=index(PREDICTED),
                  labels=np.zeros((4, 4), "int64"), n_blocks=1, n_classes=3,
                  previous=index(START))
    scores = {}
    for metric in (ChangeCounts(), ChangeFigureOfMerit(), ChangeIoU()):
        metric.accumulate(chunk)
        scores[metric.name] = metric.result()
    assert scores["change_counts"] == {"hits": 2, "wrong_hits": 2, "misses": 1,
                                       "false_alarms": 2}
    assert scores["fom_change"] == pytest.approx(2 / 7)
    # change masks: observed 5 pixels, predicted 6, both 4 (hits and wrong hits)
    assert scores["iou_change"] == pytest.approx(4 / 7)


def test_bootstrap_of_identical_blocks_has_zero_width():
    cm = np.array([[8, 2], [1, 9]])
    stats = np.repeat(cm[None], 6, axis=0)
    interval = BlockBootstrap(6, n_replicates=200, seed=1).interval(stats,
                                                                    OverallAccuracy().compute)
    assert interval.estimate == pytest.approx(17 / 20)
    assert interval.low == pytest.approx(17 / 20) and interval.high == pytest.approx(17 / 20)
    assert interval.replicates == 200 and interval.undefined == 0


def test_bootstrap_interval_of_differing_blocks_is_seeded_and_covers_the_estimate():
    rng = np.random.default_rng(0)
    stats = rng.integers(0, 50, size=(10, 5))
    metric = figure_of_merit
    a = BlockBootstrap(10, n_replicates=300, seed=3).interval(stats, metric)
    b = BlockBootstrap(10, n_replicates=300, seed=3).interval(stats, metric)
    assert a == b
    assert a.low < a.estimate < a.high
    # the percentile interval by hand: the metric of each replicate's summed blocks
    boot = BlockBootstrap(10, n_replicates=300, seed=3)
    by_hand = [metric(stats[np.repeat(np.arange(10), w)].sum(0)) for w in boot.weights]
    assert boot.weights.sum(1).tolist() == [10] * 300
    assert a.low == pytest.approx(np.percentile(by_hand, 2.5))
    assert a.high == pytest.approx(np.percentile(by_hand, 97.5))


def test_paired_difference_clearly_significant_and_not():
    rng = np.random.default_rng(5)
    blocks = 12
    hits = rng.integers(20, 40, size=blocks)
    base = np.stack([np.full(blocks, 100), hits, 40 - hits // 2, np.full(blocks, 10),
                     np.full(blocks, 5)], axis=1)
    better = base.copy()
    better[:, HIT] += 30  # the same blocks, every one with 30 more hits
    better[:, MISS] -= 15
    better[:, WRONG_HIT] -= 5
    boot = BlockBootstrap(blocks, n_replicates=500, seed=0)
    metric = figure_of_merit
    clear = boot.difference(better, base, metric)
    assert clear.significant and clear.low > 0 and clear.estimate > 0
    # a model that equals the baseline on half the blocks and loses on the other half
    # by what it wins there: the difference is about zero and not significant
    noisy = base.copy()
    noisy[0::2, HIT] += 8
    noisy[0::2, MISS] -= 8
    noisy[1::2, HIT] -= 8
    noisy[1::2, MISS] += 8
    unclear = boot.difference(noisy, base, metric)
    assert not unclear.significant and unclear.low < 0 < unclear.high
    assert unclear.to_json()["significant"] is False


def test_bootstrap_takes_mappings_and_counts_undefined_replicates():
    stats = {"changed": np.array([0, 0, 4]), "valid": np.array([10, 10, 10])}
    boot = BlockBootstrap(3, n_replicates=400, seed=2)
    ratio = lambda s: s["changed"] / s["valid"] if s["changed"] else np.nan  # noqa: E731
    interval = boot.interval(stats, ratio)
    assert interval.estimate == pytest.approx(4 / 30)
    # a replicate without block 2 is undefined: (2/3)**3 of them on average
    assert 0.2 < interval.undefined / 400 < 0.4
    with pytest.raises(ValueError, match="first axis"):
        boot.interval(np.ones((4, 5)), figure_of_merit)


def test_compare_to_baselines_picks_the_best_and_pairs_the_difference():
    blocks = 8
    base = np.tile([50, 10, 10, 5, 5], (blocks, 1))
    weak = base.copy()
    weak[:, HIT] -= 5
    weak[:, MISS] += 5
    strong = base.copy()
    strong[:, HIT] += 5
    strong[:, MISS] -= 5
    empty = np.tile([80, 0, 0, 0, 0], (blocks, 1))  # no change: FoM undefined
    boot = BlockBootstrap(blocks, n_replicates=100, seed=0)
    stats = {"unet": base, "weak": weak, "strong": strong, "empty": empty}
    result = compare_to_baselines(boot, stats, figure_of_merit, model="unet",
                                  baselines=["weak", "empty", "strong"])
    assert result["best_baseline"] == "strong"
    assert result["difference"].estimate == pytest.approx(10 / 30 - 15 / 30)
    assert result["difference"].significant  # identical blocks: a zero-width interval
    assert set(result["intervals"]) == {"unet", "weak", "empty", "strong"}
    lower = compare_to_baselines(boot, stats, figure_of_merit, model="unet",
                                 baselines=["weak", "strong"], higher_is_better=False)
    assert lower["best_baseline"] == "weak"
    none = compare_to_baselines(boot, stats, figure_of_merit, model="unet",
                                baselines=["empty"])
    assert none["best_baseline"] is None and none["difference"] is None
