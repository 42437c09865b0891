"""per_case.csv + per_case.json: round trip, validation, refusal of unstated policies, schema 1 files."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from iac.eval.metrics import case_metrics
from iac.eval.per_case import (
    COLUMNS,
    PerCaseError,
    PerCaseTable,
    load_per_case,
    mean_scores,
    save_per_case,
    sidecar_path,
)

META = {
    "empty_policy": "dice1_hd0",
    "dataset": "phantom",
    "eval_data_fingerprint": "abc123",
    "data_fingerprint": "train456",
    "split": "test",
    "model": "models:/iac-unet-phantom-unet/1",
    "restore": "probabilities",
    "nsd_tolerance_mm": {"lv": 2.0},
}


def _rows() -> list[dict]:
    return [
        {"patient": "001", "frame": "ED", "label": "lv", "dice": 0.9, "hd95": 2.5, "nsd": 0.8, "ref_empty": False, "pred_empty": False},
        {"patient": "001", "frame": "ES", "label": "lv", "dice": 1.0, "hd95": 0.0, "nsd": 1.0, "ref_empty": True, "pred_empty": True},
        {"patient": "002", "frame": "ED", "label": "lv", "dice": 0.0, "hd95": 301.25, "nsd": 0.0, "ref_empty": False, "pred_empty": True},
    ]


def test_round_trip_keeps_values_dtypes_and_meta(tmp_path):
    path = save_per_case(_rows(), tmp_path / "per_case.csv", {**META, "extra": [1, 2]})
    assert sidecar_path(path).name == "per_case.json"
    df, meta = load_per_case(path)
    assert list(df.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert df["patient"].tolist() == ["001", "001", "002"]  # ids stay text
    assert df["dice"].tolist() == [0.9, 1.0, 0.0] and df["hd95"].tolist() == [2.5, 0.0, 301.25]
    assert df["nsd"].tolist() == [0.8, 1.0, 0.0]
    assert df["ref_empty"].dtype == bool and df["pred_empty"].tolist() == [False, True, True]
    assert {k: meta[k] for k in META} == META and meta["extra"] == [1, 2] and meta["n_rows"] == 3


def test_frame_is_empty_where_the_dataset_has_none_and_extra_columns_survive(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "frame"} | {"note": "x"} for r in _rows()[:1]]
    rows.append({**rows[0], "patient": "002"})
    df, _ = load_per_case(save_per_case(pd.DataFrame(rows), tmp_path / "per_case.csv", META))
    assert df["frame"].tolist() == ["", ""] and df["note"].tolist() == ["x", "x"]


def test_collector_feeds_save(tmp_path):
    import numpy as np

    ref = np.zeros((4, 6, 6), np.uint8)
    ref[1:3, 1:4, 1:4] = 1
    table = PerCaseTable()
    table.add("p1", case_metrics(ref, ref, (1.0, 1.0, 2.0), {0: "bg", 1: "fg"}))
    table.add("p2", case_metrics(ref, ref, (1.0, 1.0, 2.0), {0: "bg", 1: "fg"}), frame="ED")
    assert len(table) == 4
    df, _ = load_per_case(save_per_case(table.to_frame(), tmp_path / "per_case.csv", META))
    assert df["frame"].tolist() == ["", "", "ED", "ED"]
    assert mean_scores(df) == {
        "dice/fg": 1.0, "hd95/fg": 0.0, "nsd/fg": 1.0, "dice/mean_fg": 1.0, "hd95/mean_fg": 0.0, "nsd/mean_fg": 1.0,
    }


def _nan_rows() -> list[dict]:
    """Under policy "nan": the empty references (the second row, and a false positive on one) are NaN."""
    rows = _rows()
    rows[1].update(dice=math.nan, hd95=math.nan, nsd=math.nan)
    rows.append({**rows[1], "patient": "003", "pred_empty": False})
    return rows


def test_nan_policy_round_trips_nan_scores(tmp_path):
    df, meta = load_per_case(save_per_case(_nan_rows(), tmp_path / "per_case.csv", {**META, "empty_policy": "nan"}))
    assert meta["empty_policy"] == "nan"
    assert df[["dice", "hd95", "nsd"]].isna().all(axis=1).tolist() == [False, True, False, True]


@pytest.mark.parametrize("row, scores", [(3, {"dice": 0.0, "hd95": 301.25, "nsd": 0.0}), (0, {"nsd": math.nan})])
def test_nan_policy_refuses_nan_that_does_not_follow_the_reference(tmp_path, row, scores):
    """A false positive on an empty reference scored 0 (the older 'nan'), or NaN on a present structure."""
    rows = _nan_rows()
    rows[row].update(scores)
    with pytest.raises(PerCaseError, match="NaN exactly where the reference is empty; 1 rows are not"):
        save_per_case(rows, tmp_path / "per_case.csv", {**META, "empty_policy": "nan"})


def test_a_schema_1_file_reads_with_its_fingerprint_as_the_evaluated_data(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "nsd"} for r in _rows()]
    path = tmp_path / "per_case.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    old = {"schema_version": 1, "empty_policy": "dice1_hd0", "dataset": "phantom", "data_fingerprint": "abc123"}
    sidecar_path(path).write_text(json.dumps({**old, "split": "test", "model": None, "n_rows": 3}))
    df, meta = load_per_case(path)
    assert "nsd" not in df.columns and df["dice"].tolist() == [0.9, 1.0, 0.0]
    assert meta["eval_data_fingerprint"] == "abc123" and meta["data_fingerprint"] is None
    assert meta["restore"] == "labels"


def test_save_refuses_meta_without_policy(tmp_path):
    meta = {k: v for k, v in META.items() if k != "empty_policy"}
    with pytest.raises(PerCaseError, match="states no 'empty_policy'"):
        save_per_case(_rows(), tmp_path / "per_case.csv", meta)
    with pytest.raises(PerCaseError, match="unknown empty-structure policy 'zero'"):
        save_per_case(_rows(), tmp_path / "per_case.csv", {**META, "empty_policy": "zero"})
    assert not (tmp_path / "per_case.csv").exists()


def test_load_refuses_missing_or_policyless_sidecar(tmp_path):
    path = save_per_case(_rows(), tmp_path / "per_case.csv", META)
    side = sidecar_path(path)
    meta = json.loads(side.read_text())
    del meta["empty_policy"]
    side.write_text(json.dumps(meta))
    with pytest.raises(PerCaseError, match="states no 'empty_policy'"):
        load_per_case(path)
    side.unlink()
    with pytest.raises(PerCaseError, match="no sidecar per_case.json.*empty-structure policy is unknown"):
        load_per_case(path)
    with pytest.raises(PerCaseError, match="does not exist"):
        load_per_case(tmp_path / "nothing.csv")


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda df: df.drop(columns="hd95"), r"missing columns \['hd95'\]"),
        (lambda df: df.assign(dice=["x", "0.1", "0.2"]), "'dice' is not numeric"),
        (lambda df: df.assign(dice=[1.5, 0.1, 0.2]), r"outside \[0, 1\]"),
        (lambda df: df.assign(hd95=[-1.0, 0.1, 0.2]), "HD95"),
        (lambda df: df.assign(ref_empty=["maybe", "True", "False"]), "non-boolean"),
        (lambda df: df.assign(frame=["ED", "ED", "ED"], patient="001"), "repeat a"),
        (lambda df: df.assign(dice=[math.nan, 0.1, 0.2]), "NaN scores"),
    ],
)
def test_load_validates_columns_and_values(tmp_path, edit, match):
    path = save_per_case(_rows(), tmp_path / "per_case.csv", META)
    edit(pd.read_csv(path, dtype=str, keep_default_na=False)).to_csv(path, index=False)
    with pytest.raises(PerCaseError, match=match):
        load_per_case(path)


def test_row_count_must_match_sidecar(tmp_path):
    path = save_per_case(_rows(), tmp_path / "per_case.csv", META)
    pd.read_csv(path, dtype=str, keep_default_na=False).iloc[:2].to_csv(path, index=False)
    with pytest.raises(PerCaseError, match="has 2 rows but its sidecar records 3"):
        load_per_case(path)
