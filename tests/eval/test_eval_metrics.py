"""Per-case Dice / HD95: hand-computed masks, MONAI's metric classes, empty structures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric

from iac.eval.metrics import (
    EMPTY_POLICIES,
    MEAN_FG_LABEL,
    case_metrics,
    image_diagonal_mm,
    structure_scores,
)

SHAPE = (8, 10, 12)  # (Z, Y, X)
SPACING_XYZ = (0.5, 1.0, 2.5)  # anisotropic, x finest, z coarsest
NAMES = {0: "background", 1: "a", 2: "b"}


def _empty() -> np.ndarray:
    return np.zeros(SHAPE, dtype=np.uint8)


def _by_label(rows: list[dict]) -> dict[str, dict]:
    return {r["label"]: r for r in rows}


def test_cube_vs_shifted_cube_dice_is_exact():
    ref, pred = _empty(), _empty()
    ref[2:6, 2:6, 2:6] = 1
    pred[2:6, 2:6, 3:7] = 1  # one voxel along x: overlap 4 * 4 * 3
    s = structure_scores(pred, ref, SPACING_XYZ)
    assert s["dice"] == pytest.approx(2 * 48 / (64 + 64))
    assert not s["ref_empty"] and not s["pred_empty"]


def test_hd95_single_voxels_uses_xyz_spacing():
    ref, pred = _empty(), _empty()
    ref[1, 1, 1] = 1
    pred[3, 4, 1] = 1  # 2 voxels along z, 3 along y
    s = structure_scores(pred, ref, SPACING_XYZ)
    assert s["hd95"] == pytest.approx(math.hypot(2 * SPACING_XYZ[2], 3 * SPACING_XYZ[1]), rel=1e-6)
    assert s["dice"] == 0.0


def test_hd95_parallel_slabs_in_mm():
    ref, pred = _empty(), _empty()
    ref[2, 2:7, 3:9] = 1
    pred[5, 2:7, 3:9] = 1  # every surface voxel is 3 slices from its partner
    s = structure_scores(pred, ref, SPACING_XYZ)
    assert s["hd95"] == pytest.approx(3 * SPACING_XYZ[2], rel=1e-6)
    # the same shift along x is measured with the x spacing
    ref2, pred2 = _empty(), _empty()
    ref2[2:6, 2:7, 2] = 1
    pred2[2:6, 2:7, 5] = 1
    assert structure_scores(pred2, ref2, SPACING_XYZ)["hd95"] == pytest.approx(3 * SPACING_XYZ[0], rel=1e-6)


def _random_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    ref = _empty()
    ref[1:6, 2:8, 1:7] = 1
    ref[3:7, 5:9, 6:11] = 2
    pred = ref.copy()
    noise = rng.random(SHAPE) < 0.08
    pred[noise] = rng.integers(0, 3, size=int(noise.sum()))
    return pred, ref


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_monai_metric_classes(seed):
    pred, ref = _random_case(np.random.default_rng(seed))
    rows = _by_label(case_metrics(pred, ref, SPACING_XYZ, NAMES))

    def onehot(x):
        return torch.nn.functional.one_hot(torch.as_tensor(x, dtype=torch.long), 3).permute(3, 0, 1, 2)[None].float()

    dice = DiceMetric(include_background=False, reduction="none")
    dice(onehot(pred), onehot(ref))
    hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
    hd(onehot(pred), onehot(ref), spacing=list(SPACING_XYZ[::-1]))
    d, h = dice.aggregate()[0], hd.aggregate()[0]
    for i, name in enumerate(["a", "b"]):
        assert rows[name]["dice"] == pytest.approx(float(d[i]), abs=1e-6)
        assert rows[name]["hd95"] == pytest.approx(float(h[i]), abs=1e-5)
    assert rows[MEAN_FG_LABEL]["dice"] == pytest.approx(float(d.mean()), abs=1e-6)
    assert rows[MEAN_FG_LABEL]["hd95"] == pytest.approx(float(h.mean()), abs=1e-5)


def test_empty_structures_default_policy():
    ref, pred = _empty(), _empty()
    ref[2:4, 2:4, 2:4] = 1  # class a: predicted empty; class b: empty in both
    rows = _by_label(case_metrics(pred, ref, SPACING_XYZ, NAMES))
    diag = image_diagonal_mm(SHAPE, SPACING_XYZ)
    assert diag == pytest.approx(math.sqrt((8 * 2.5) ** 2 + (10 * 1.0) ** 2 + (12 * 0.5) ** 2))
    a, b, mean = rows["a"], rows["b"], rows[MEAN_FG_LABEL]
    assert (a["dice"], a["hd95"], a["ref_empty"], a["pred_empty"]) == (0.0, pytest.approx(diag), False, True)
    assert (b["dice"], b["hd95"], b["ref_empty"], b["pred_empty"]) == (1.0, 0.0, True, True)
    assert mean["dice"] == pytest.approx(0.5) and mean["hd95"] == pytest.approx(diag / 2)
    assert mean["ref_empty"] is False and mean["pred_empty"] is True
    # predicted where the reference is empty: also Dice 0 / diagonal
    s = structure_scores(ref, pred, SPACING_XYZ)
    assert (s["dice"], s["hd95"], s["ref_empty"], s["pred_empty"]) == (0.0, pytest.approx(diag), True, False)


def test_nan_policy_leaves_both_empty_out_of_the_mean():
    ref = _empty()
    ref[2:4, 2:4, 2:4] = 1
    rows = _by_label(case_metrics(ref.copy(), ref, SPACING_XYZ, NAMES, policy="nan"))
    assert math.isnan(rows["b"]["dice"]) and math.isnan(rows["b"]["hd95"])
    assert rows[MEAN_FG_LABEL]["dice"] == pytest.approx(1.0) and rows[MEAN_FG_LABEL]["hd95"] == 0.0


def test_regions_are_unions_and_rows_are_ordered():
    pred, ref = _random_case(np.random.default_rng(3))
    rows = case_metrics(pred, ref, SPACING_XYZ, NAMES, regions={"whole": (1, 2)})
    assert [r["label"] for r in rows] == ["a", "b", "whole", MEAN_FG_LABEL]
    whole = structure_scores(pred > 0, ref > 0, SPACING_XYZ)
    assert rows[2]["dice"] == pytest.approx(whole["dice"]) and rows[2]["hd95"] == pytest.approx(whole["hd95"])
    assert set(rows[0]) == {"label", "dice", "hd95", "ref_empty", "pred_empty"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"policy": "ignore"}, "unknown empty-structure policy 'ignore'"),
        ({"spacing_xyz": (1.0, 1.0)}, "spacing_xyz has 2 values"),
        ({"spacing_xyz": (1.0, 0.0, 1.0)}, "positive finite"),
        ({"regions": {"whole": (1, 5)}}, r"region 'whole'.*unknown \[5\]"),
        ({"regions": {"a": (1,)}}, "clash"),
        ({"label_names": {0: "background"}}, "no foreground label"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    args = {"spacing_xyz": SPACING_XYZ, "label_names": NAMES, **kwargs}
    with pytest.raises(ValueError, match=match):
        case_metrics(_empty(), _empty(), **args)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="differs from ref shape"):
        case_metrics(_empty(), np.zeros((2, 2, 2), np.uint8), SPACING_XYZ, NAMES)
    assert "dice1_hd0" in EMPTY_POLICIES
