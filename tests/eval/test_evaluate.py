"""Patient-level evaluation: predict, put back on the original grid, score per case."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from iac.config import PrepareConfig
from iac.eval.evaluate import aggregate, evaluate_network
from iac.eval.metrics import MEAN_FG_LABEL

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny prepared phantom: four patients of two frames, one patient in test."""
    from iac.data.prepare import prepare_dataset
    from iac.data.store import PreparedDataset

    out = tmp_path_factory.mktemp("evaluate") / "prepared"
    cfg = PrepareConfig(
        dataset="phantom", out=out, phantom_patients=4, phantom_size=24, val_fraction=0.25, test_fraction=0.25, workers=1
    )
    prepare_dataset(cfg, progress=False)
    return PreparedDataset(out)


class _Oracle(torch.nn.Module):
    """Answers with the stored labels of the split's slices, in the order they are asked for."""

    def __init__(self, data, split: str) -> None:
        super().__init__()
        labels = np.concatenate([np.asarray(data.label(c.case_id)) for c in data.cases(split)])  # (sum Z, H, W)
        self.onehot = torch.nn.functional.one_hot(torch.from_numpy(labels).long(), data.num_classes)
        self.next = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.onehot[self.next : self.next + len(x)].permute(0, 3, 1, 2).float()  # (B, K, H, W)
        self.next += len(x)
        return out


class _Background(torch.nn.Module):
    """Predicts background everywhere."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), self.num_classes, *x.shape[2:])
        logits[:, 0] = 1.0
        return logits


def test_a_perfect_prediction_scores_one_on_the_original_grid(data):
    res = evaluate_network(_Oracle(data, "test"), data, "test", batch_size=5, progress=False)
    df = res.per_case
    assert {"patient", "frame", "case", "label", "dice", "hd95", "nsd", "ref_empty", "pred_empty"} <= set(df.columns)
    assert set(df["case"]) == {c.case_id for c in data.cases("test")}
    assert set(df["label"]) == {*(n for k, n in data.label_names.items() if k), MEAN_FG_LABEL}
    assert (df["dice"] == 1.0).all() and (df["hd95"] == 0.0).all() and (df["nsd"] == 1.0).all()
    agg = res.aggregates
    assert agg["dice_patient_mean_fg"] == 1.0 and agg["nsd_patient_mean_fg"] == 1.0
    assert agg["n_patients"] == len(data.patients("test")) and agg["n_cases"] == len(data.cases("test"))
    assert {"dice_ED_mean_fg", "dice_ES_mean_fg"} <= set(agg)
    assert res.seconds_per_case > 0


def test_predicting_background_only_misses_every_structure(data):
    res = evaluate_network(_Background(data.num_classes), data, "test", progress=False)
    fg = res.per_case[res.per_case["label"] != MEAN_FG_LABEL]
    assert fg["pred_empty"].all()
    assert (fg.loc[~fg["ref_empty"], "dice"] == 0.0).all()
    assert res.aggregates["dice_patient_mean_fg"] < 1.0


def test_predictions_are_written_with_the_original_geometry(data, tmp_path):
    import SimpleITK as sitk

    evaluate_network(_Oracle(data, "test"), data, "test", predictions_dir=tmp_path / "pred", progress=False)
    for case in data.cases("test"):
        img = sitk.ReadImage(str(tmp_path / "pred" / f"{case.case_id}.nii.gz"))
        geom = data.geometry(case.case_id)
        assert list(img.GetSize()) == list(geom["size"])
        np.testing.assert_allclose(img.GetSpacing(), geom["spacing"], rtol=1e-6)
        np.testing.assert_allclose(img.GetOrigin(), geom["origin"], rtol=1e-6)
        ref, _ = data.original_label(case.case_id)
        assert np.array_equal(sitk.GetArrayFromImage(img), np.asarray(ref))


def test_an_unknown_nsd_tolerance_name_is_refused_before_predicting(data):
    with pytest.raises(ValueError, match=r"nsd_class_tolerance_mm names \['LVV'\].*valid names: RV, myocardium, LV"):
        evaluate_network(_Background(data.num_classes), data, "test", progress=False, nsd_class_tolerance_mm={"LVV": 1.0})


def test_an_empty_split_is_refused():
    empty = SimpleNamespace(cases=lambda split: [], root=Path("prepared"))
    with pytest.raises(ValueError, match="'test'.*no cases"):
        evaluate_network(torch.nn.Identity(), empty, "test", progress=False)


def test_aggregate_averages_frames_within_a_patient_before_patients():
    def row(patient, frame, label, dice, hd95):
        return {"patient": patient, "frame": frame, "label": label, "dice": dice, "hd95": hd95}

    df = pd.DataFrame(
        [
            row("a", "ED", "LV", 1.0, 0.0), row("a", "ED", MEAN_FG_LABEL, 1.0, 0.0),
            row("a", "ES", "LV", 0.0, 10.0), row("a", "ES", MEAN_FG_LABEL, 0.0, 10.0),
            row("b", "ED", "LV", 0.8, 2.0), row("b", "ED", MEAN_FG_LABEL, 0.8, 2.0),
        ]
    )
    agg = aggregate(df)
    # Patient a averages to 0.5, patient b is 0.8: 0.65 (the case mean would be 0.6).
    assert agg["dice_patient_mean_fg"] == pytest.approx(0.65)
    assert agg["hd95_patient_mean_fg"] == pytest.approx((5.0 + 2.0) / 2)
    assert agg["dice_ED_mean_fg"] == pytest.approx(0.9) and agg["dice_ES_mean_fg"] == pytest.approx(0.0)
    assert agg["dice_LV"] == pytest.approx(0.6)
    assert agg["n_patients"] == 2 and agg["n_cases"] == 3
