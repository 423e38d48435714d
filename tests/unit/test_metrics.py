import numpy as np
import pytest

from ai4land.evaluate.baselines import coarse_majority
from ai4land.evaluate.metrics import (
    ChangeScores, CohenKappa, ConfusionMatrix, MeanIoU, OverallAccuracy, PerClassIoU,
)
from ai4land.config import CoarseGroup
from ai4land.harmonize import class_groups


def test_hand_computed_confusion_metrics():
    target = np.array([0, 0, 0, 1, 1, 2, -1])
    pred = np.array([0, 0, 1, 1, 2, 2, 0])
    cm = ConfusionMatrix(3).update(target, pred).matrix
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert OverallAccuracy().compute(cm) == pytest.approx(4 / 6)
    np.testing.assert_allclose(PerClassIoU().compute(cm), [2 / 3, 1 / 3, 1 / 2])
    assert MeanIoU().compute(cm) == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)
    # kappa: po = 4/6, pe = (2*3 + 2*2 + 2*1) / 36 = 12/36
    assert CohenKappa().compute(cm) == pytest.approx((4 / 6 - 1 / 3) / (1 - 1 / 3))


def test_change_scores():
    previous = np.array([0, 0, 0, 0, 1])
    target = np.array([1, 1, 0, 0, 1])
    pred = np.array([1, 2, 1, 0, 1])
    scores = ChangeScores().compute(previous, target, pred)
    assert (scores["hits"], scores["wrong_hits"], scores["misses"], scores["false_alarms"]) == (1, 1, 0, 1)
    assert scores["fom"] == pytest.approx(1 / 3)
    assert scores["iou"] == pytest.approx(1 / 3)


def test_coarse_majority_baseline():
    groups = class_groups({"crop": CoarseGroup(variables=["a"], classes=[22]),
                           "natural": CoarseGroup(variables=["b"], classes=[55, 66])}, [22, 55, 66])
    fractions = np.array([[[0.7, 0.2]], [[0.3, 0.8]]])
    codes = coarse_majority(fractions, groups=groups, factor=2)
    assert codes.tolist() == [[22, 22, 55, 55], [22, 22, 55, 55]]
    ocean = np.zeros((2, 4), bool)
    ocean[0, 0] = True
    assert coarse_majority(fractions, groups=groups, factor=2, ocean_mask=ocean)[0, 0] == 0
