import numpy as np
import pytest

from ai4land.config import CoarseGroup
from ai4land.evaluate.baselines import coarse_majority
from ai4land.evaluate.interface import Context, confusion_by_label
from ai4land.evaluate.metrics import (
    Calibration,
    CohenKappa,
    MeanF1,
    MeanIoU,
    OverallAccuracy,
    PerClassF1,
    PerClassIoU,
    ReliabilityHistogram,
    confusion_matrix,
)
from ai4land.evaluate.scores import ModelScores
from ai4land.predict.harmonize import class_groups


def test_hand_computed_confusion_metrics():
    target = np.array([0, 0, 0, 1, 1, 2, -1])
    pred = np.array([0, 0, 1, 1, 2, 2, 0])
    cm = confusion_matrix(target, pred, n_classes=3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert OverallAccuracy().compute(cm) == pytest.approx(4 / 6)
    np.testing.assert_allclose(PerClassIoU().values(cm), [2 / 3, 1 / 3, 1 / 2])
    # JSON: keyed by class code, rounded to 6 decimals
    assert PerClassIoU(Context(classes=(11, 22, 33))).compute(cm) == {
        "11": 0.666667, "22": 0.333333, "33": 0.5}
    assert MeanIoU().compute(cm) == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)
    # kappa: po = 4/6, pe = (2*3 + 2*2 + 2*1) / 36 = 12/36
    assert CohenKappa().compute(cm) == pytest.approx((4 / 6 - 1 / 3) / (1 - 1 / 3))


def test_hand_computed_f1():
    cm = np.array([[2, 1, 0], [0, 1, 1], [0, 0, 1]])
    # F1 = 2 tp / (row + column): 4/5, 2/4, 2/3
    np.testing.assert_allclose(PerClassF1().values(cm), [4 / 5, 1 / 2, 2 / 3])
    assert MeanF1().compute(cm) == pytest.approx((4 / 5 + 1 / 2 + 2 / 3) / 3)
    # a class absent from target and prediction does not count
    padded = np.pad(cm, ((0, 1), (0, 1)))
    assert MeanF1().compute(padded) == pytest.approx(MeanF1().compute(cm))


def test_confusion_by_label_splits_pixels_by_block():
    target = np.array([0, 1, 1, 0, 1, 0])
    pred = np.array([0, 1, 0, 0, 0, -1])
    labels = np.array([0, 0, 0, 1, 1, -1])
    cms = confusion_by_label(target, pred, labels=labels, n_labels=2, n_classes=2)
    assert cms[0].tolist() == [[1, 0], [1, 1]]
    assert cms[1].tolist() == [[1, 0], [1, 0]]
    total = confusion_matrix(np.where(labels >= 0, target, -1), pred, n_classes=2)
    np.testing.assert_array_equal(cms.sum(0), total)


def test_model_scores_per_year_and_block():
    blocks = [{"id": 7, "row": 0, "col": 0}, {"id": 9, "row": 0, "col": 1}]
    scores = ModelScores(classes=[11, 22], blocks=blocks, calibration_bins=2)
    labels = np.array([[0, 0, 1, 1]])
    previous = np.array([[0, 0, 0, 0]])
    # 2001: block 7 all right, block 9 half right; 2002: everything right
    scores.add(year=2001, target=np.array([[0, 1, 0, 1]]), prediction=np.array([[0, 1, 0, 0]]),
               previous=previous, labels=labels, conservation_mae=0.2,
               confidence=np.array([[0.9, 0.9, 0.9, 0.4]]))
    scores.add(year=2002, target=np.array([[0, 0, 0, 1]]), prediction=np.array([[0, 0, 0, 1]]),
               previous=previous, labels=labels, conservation_mae=0.0,
               confidence=np.array([[0.9, 0.9, 0.9, 0.9]]))
    report = scores.report()
    assert report["oa"] == pytest.approx(7 / 8)
    assert report["by_year"]["2001"]["oa"] == pytest.approx(3 / 4)
    assert report["by_year"]["2002"]["oa"] == 1.0
    assert report["by_block"]["7"]["oa"] == 1.0 and report["by_block"]["7"]["n_pixels"] == 4
    assert report["by_block"]["9"]["oa"] == pytest.approx(3 / 4)
    # change vs previous (all class 0): 2001 hits 1 (pixel 1), misses 1 (pixel 3); 2002 hit 1
    assert report["change_counts"] == {"hits": 2, "wrong_hits": 0, "misses": 1, "false_alarms": 0}
    assert report["fom_change"] == pytest.approx(2 / 3)
    assert report["by_year"]["2001"]["fom_change"] == pytest.approx(1 / 2)
    assert report["conservation_mae"] == pytest.approx(0.1)
    assert report["calibration"]["count"] == [1, 7]
    assert report["calibration"]["accuracy"] == [0.0, 1.0]


def test_calibration_hand_computed():
    hist = ReliabilityHistogram(2).update(np.array([0.2, 0.4, 0.8, 1.0]),
                                          np.array([True, False, True, False]))
    result = Calibration().compute(hist.table)
    assert result["count"] == [2, 2]
    assert result["confidence"] == pytest.approx([0.3, 0.9])
    assert result["accuracy"] == pytest.approx([0.5, 0.5])
    # ECE = (2 * |0.5 - 0.3| + 2 * |0.5 - 0.9|) / 4
    assert result["ece"] == pytest.approx(0.3)


def test_coarse_majority_baseline():
    groups = class_groups({"crop": CoarseGroup(variables=["a"], classes=[22]),
                           "natural": CoarseGroup(variables=["b"], classes=[55, 66])}, [22, 55, 66])
    fractions = np.array([[[0.7, 0.2]], [[0.3, 0.8]]])
    codes = coarse_majority(fractions, groups=groups, factor=2)
    assert codes.tolist() == [[22, 22, 55, 55], [22, 22, 55, 55]]
    ocean = np.zeros((2, 4), bool)
    ocean[0, 0] = True
    assert coarse_majority(fractions, groups=groups, factor=2, ocean_mask=ocean)[0, 0] == 0


def test_model_scores_period_pooling_stability_and_intervals():
    from ai4land.evaluate.bootstrap import BlockBootstrap
    from ai4land.evaluate.stability import stability_counts

    blocks = [{"id": 7, "row": 0, "col": 0}, {"id": 9, "row": 0, "col": 1}]
    labels = np.array([[0, 0, 1, 1]])
    start = np.array([[0, 0, 0, 0]])
    groups = class_groups({"a": CoarseGroup(variables=["a"], classes=[11]),
                           "b": CoarseGroup(variables=["b"], classes=[22])}, [11, 22])
    # stability of each block (1 x 2 pixels): one of 2 pixels changed, isolated
    counts = stability_counts(np.array([[11, 11]], "uint8"), np.array([[22, 11]], "uint8"),
                              valid=np.ones((1, 2), bool), groups=groups, factor=2,
                              target=np.array([[[0.5]], [[0.5]]]))
    target = np.array([[1, 0, 1, 1]])
    chains = []
    for prediction in (np.array([[1, 0, 1, 0]]), np.array([[1, 1, 0, 0]])):
        scores = ModelScores(classes=[11, 22], blocks=blocks, calibration_bins=2,
                             group_names=("a", "b"))
        for block, pixels in enumerate((slice(0, 2), slice(2, 4))):  # one chunk per block
            scores.add(year=2001, target=target[:, pixels], prediction=prediction[:, pixels],
                       previous=start[:, pixels], labels=labels[:, pixels],
                       conservation_mae=0.0, start=start[:, pixels], block=block,
                       stability=counts)
        chains.append(scores)
    # chain 1: hits 2 (pixels 0, 2), miss 1 (pixel 3); chain 2: hit 1 (0), false alarm 1
    # (1), misses 2 (2, 3)
    assert chains[0].report()["period"]["fom"] == pytest.approx(2 / 3)
    assert chains[1].report()["period"]["fom"] == pytest.approx(1 / 4)
    pooled = ModelScores.pooled(chains)
    report = pooled.report()
    assert report["period"]["counts"] == {"correct_rejection": 1, "hit": 3, "miss": 3,
                                          "false_alarm": 1, "wrong_hit": 0}
    assert report["period"]["fom"] == pytest.approx(3 / 7)
    assert report["period"]["producers_accuracy"] == pytest.approx(3 / 6)
    assert report["period"]["users_accuracy"] == pytest.approx(3 / 4)
    assert report["n_pixels"] == 8
    stability = pooled.report()["stability"]
    assert stability["changed_share"] == 0.5 and stability["swap_ratio"] == 0.0
    assert stability["isolated_share"] == 1.0
    assert stability["counts"]["changed"] == 4  # 1 per block and chain
    assert set(stability["area_share"]) == {"a", "b"}
    # intervals: one draw of both blocks reproduces the estimate; with both blocks
    # agreeing on OA the interval has no width
    bootstrap = BlockBootstrap(2, n_replicates=50, seed=0)
    intervals = pooled.report(bootstrap=bootstrap)["intervals"]
    assert intervals["period_fom"]["estimate"] == pytest.approx(3 / 7, abs=1e-6)
    assert intervals["oa"]["estimate"] == pytest.approx(report["oa"], abs=1e-6)
    assert intervals["swap_ratio"]["low"] == intervals["swap_ratio"]["high"] == 0.0
    # pooled, block 0 has 3 of 4 pixels right, block 1 1 of 4: replicates draw OA 1/4
    # (block 1 twice), 1/2 or 3/4 (block 0 twice)
    assert report["oa"] == 0.5
    assert 0.25 - 1e-9 <= intervals["oa"]["low"] <= 0.5 <= intervals["oa"]["high"] <= 0.75 + 1e-9
    assert intervals["oa"]["high"] > intervals["oa"]["low"]


def _chunks(n_blocks=2):
    """Site-year chunks of two years and two blocks with every optional part."""
    from ai4land.evaluate.interface import Chunk
    from ai4land.evaluate.stability import stability_counts

    rng = np.random.default_rng(3)
    groups = class_groups({"a": CoarseGroup(variables=["a"], classes=[11]),
                           "b": CoarseGroup(variables=["b"], classes=[22, 33])}, [11, 22, 33])
    chunks = []
    for year in (2001, 2002):
        for block in range(n_blocks):
            target, prediction, previous = (rng.integers(-1, 3, (6, 6)) for _ in range(3))
            codes = np.array([11, 22, 33], "uint8")
            counts = stability_counts(codes[np.maximum(previous, 0)],
                                      codes[np.maximum(prediction, 0)],
                                      valid=np.ones((6, 6), bool), groups=groups, factor=3,
                                      target=np.full((2, 2, 2), 0.5))
            chunks.append(Chunk(year=year, target=target, prediction=prediction,
                                labels=np.full((6, 6), block), n_blocks=n_blocks, n_classes=3,
                                previous=previous, confidence=rng.random((6, 6)),
                                conservation_mae=float(rng.random()),
                                start=previous if year == 2002 else None, block=block,
                                stability=counts))
    return chunks


def test_every_registered_metric_merges_what_it_accumulates():
    """The interface: chunks accumulated in one instance give the result of instances
    that each accumulated some and were merged (any registered metric)."""
    import json

    from ai4land.evaluate import registry

    context = Context(classes=(11, 22, 33), n_blocks=2, calibration_bins=4,
                      group_names=("a", "b"))
    chunks = _chunks()
    for metric in registry.metrics():
        whole = metric(context)
        for chunk in chunks:
            whole.accumulate(chunk)
        merged = metric(context)
        for chunk in chunks:
            part = metric(context)
            part.accumulate(chunk)
            merged.merge(part)
        assert whole.result() is not None, metric.name
        assert json.dumps(whole.result()) == json.dumps(merged.result()), metric.name
        assert metric(context).result() is None, metric.name  # nothing accumulated
