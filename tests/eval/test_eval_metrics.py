"""Per-case Dice / HD95 / NSD: hand-computed masks, MONAI's metric classes, empty structures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDiceMetric

from iac.eval.metrics import (
    DEFAULT_NSD_TOLERANCE_MM,
    EMPTY_POLICIES,
    MEAN_FG_LABEL,
    case_metrics,
    image_diagonal_mm,
    nsd_tolerances,
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
    # NSD on the whole, uncropped volume, with a tolerance per class.
    nsd = SurfaceDiceMetric([1.0, 3.0], include_background=False, reduction="none", use_subvoxels=True)
    nsd(onehot(pred), onehot(ref), spacing=list(SPACING_XYZ[::-1]))
    rows_tau = _by_label(case_metrics(pred, ref, SPACING_XYZ, NAMES, nsd_tolerance_mm={"a": 1.0, "b": 3.0}))
    d, h, n = dice.aggregate()[0], hd.aggregate()[0], nsd.aggregate()[0]
    for i, name in enumerate(["a", "b"]):
        assert rows[name]["dice"] == pytest.approx(float(d[i]), abs=1e-6)
        assert rows[name]["hd95"] == pytest.approx(float(h[i]), abs=1e-5)
        assert rows_tau[name]["nsd"] == pytest.approx(float(n[i]), abs=1e-6)
    assert 0.0 < float(n.min()) < 1.0  # the noise puts part of each surface beyond its tolerance
    assert rows[MEAN_FG_LABEL]["dice"] == pytest.approx(float(d.mean()), abs=1e-6)
    assert rows[MEAN_FG_LABEL]["hd95"] == pytest.approx(float(h.mean()), abs=1e-5)
    assert rows_tau[MEAN_FG_LABEL]["nsd"] == pytest.approx(float(n.mean()), abs=1e-6)


def test_empty_structures_default_policy():
    ref, pred = _empty(), _empty()
    ref[2:4, 2:4, 2:4] = 1  # class a: predicted empty; class b: empty in both
    rows = _by_label(case_metrics(pred, ref, SPACING_XYZ, NAMES))
    diag = image_diagonal_mm(SHAPE, SPACING_XYZ)
    assert diag == pytest.approx(math.sqrt((8 * 2.5) ** 2 + (10 * 1.0) ** 2 + (12 * 0.5) ** 2))
    a, b, mean = rows["a"], rows["b"], rows[MEAN_FG_LABEL]
    assert (a["dice"], a["hd95"], a["nsd"], a["ref_empty"], a["pred_empty"]) == (0.0, pytest.approx(diag), 0.0, False, True)
    assert (b["dice"], b["hd95"], b["nsd"], b["ref_empty"], b["pred_empty"]) == (1.0, 0.0, 1.0, True, True)
    assert mean["dice"] == pytest.approx(0.5) and mean["hd95"] == pytest.approx(diag / 2) and mean["nsd"] == 0.5
    assert mean["ref_empty"] is False and mean["pred_empty"] is True
    # predicted where the reference is empty: also Dice 0 / diagonal / NSD 0
    s = structure_scores(ref, pred, SPACING_XYZ)
    assert (s["dice"], s["hd95"], s["nsd"], s["ref_empty"], s["pred_empty"]) == (0.0, pytest.approx(diag), 0.0, True, False)


def test_nan_policy_depends_on_the_reference_only():
    """MONAI's ignore_empty: an empty reference is not scored, whether the prediction is empty or not."""
    ref = _empty()
    ref[2:4, 2:4, 2:4] = 1
    right = _by_label(case_metrics(ref.copy(), ref, SPACING_XYZ, NAMES, policy="nan"))
    false_positive = ref.copy()
    false_positive[6, 6:8, 6:8] = 2  # class b predicted where the reference has none
    wrong = _by_label(case_metrics(false_positive, ref, SPACING_XYZ, NAMES, policy="nan"))
    for rows in (right, wrong):
        assert all(math.isnan(rows["b"][k]) for k in ("dice", "hd95", "nsd")) and rows["b"]["ref_empty"]
        assert rows[MEAN_FG_LABEL]["dice"] == pytest.approx(1.0) and rows[MEAN_FG_LABEL]["hd95"] == 0.0
    assert right["b"]["pred_empty"] and not wrong["b"]["pred_empty"]  # the false positive is still on record
    missed = _by_label(case_metrics(_empty(), ref, SPACING_XYZ, NAMES, policy="nan"))["a"]
    assert (missed["dice"], missed["nsd"], missed["pred_empty"]) == (0.0, 0.0, True)  # a miss is scored


def test_nsd_counts_the_surface_within_the_tolerance_in_mm():
    ref, pred = _empty(), _empty()
    ref[2, 2:7, 3:9] = 1
    pred[5, 2:7, 3:9] = 1  # 3 slices (7.5 mm) apart: every surface element is 2.5-10 mm from the other surface
    assert structure_scores(pred, ref, SPACING_XYZ, nsd_tolerance_mm=1.0)["nsd"] == 0.0
    assert structure_scores(pred, ref, SPACING_XYZ, nsd_tolerance_mm=10.0)["nsd"] == 1.0
    assert structure_scores(ref, ref, SPACING_XYZ)["nsd"] == 1.0
    with pytest.raises(ValueError, match="nsd_tolerance_mm must be a positive finite distance in mm"):
        structure_scores(pred, ref, SPACING_XYZ, nsd_tolerance_mm=0.0)


def test_nsd_tolerances_per_name():
    assert nsd_tolerances(["a", "b", "whole"], per_name={"b": 3.0}) == {
        "a": DEFAULT_NSD_TOLERANCE_MM, "b": 3.0, "whole": DEFAULT_NSD_TOLERANCE_MM,
    }
    with pytest.raises(ValueError, match=r"nsd_class_tolerance_mm names \['LV'\].*valid names: a, b, whole"):
        nsd_tolerances(["a", "b", "whole"], per_name={"LV": 1.0})
    with pytest.raises(ValueError, match=r"names \['c'\]"):
        case_metrics(_empty(), _empty(), SPACING_XYZ, NAMES, nsd_tolerance_mm={"c": 1.0})


def test_regions_are_unions_and_rows_are_ordered():
    pred, ref = _random_case(np.random.default_rng(3))
    rows = case_metrics(pred, ref, SPACING_XYZ, NAMES, regions={"whole": (1, 2)})
    assert [r["label"] for r in rows] == ["a", "b", "whole", MEAN_FG_LABEL]
    whole = structure_scores(pred > 0, ref > 0, SPACING_XYZ)
    assert rows[2]["dice"] == pytest.approx(whole["dice"]) and rows[2]["hd95"] == pytest.approx(whole["hd95"])
    assert set(rows[0]) == {"label", "dice", "hd95", "nsd", "ref_empty", "pred_empty"}


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
