"""Patient-level splits: disjoint, complete, seeded, order-independent; split files."""

from __future__ import annotations

import json

import pytest

from iac.data.layouts.base import DataError
from iac.data.splits import load_split_file, split_patients

PATIENTS = [f"patient{i:03d}" for i in range(1, 35)]


def test_disjoint_complete_and_sized():
    s = split_patients(PATIENTS, seed=0, val_fraction=0.15, test_fraction=0.30)
    sets = [set(s[k]) for k in ("train", "val", "test")]
    assert sum(len(x) for x in sets) == len(PATIENTS) and set().union(*sets) == set(PATIENTS)
    assert len(s["test"]) >= 10 and len(s["train"]) >= 16


def test_reproducible_and_seeded():
    a = split_patients(PATIENTS, 3, 0.15, 0.3)
    assert a == split_patients(list(reversed(PATIENTS)) + PATIENTS[:2], 3, 0.15, 0.3)
    assert a != split_patients(PATIENTS, 4, 0.15, 0.3)


def test_no_training_patient_left():
    with pytest.raises(ValueError, match="no training patient"):
        split_patients(["a", "b"], 0, 0.5, 0.4)


def test_split_file(tmp_path):
    f = tmp_path / "split.json"
    f.write_text(json.dumps({"train": ["a", "b"], "test": ["c"]}))
    assert load_split_file(f, ["a", "b", "c"]) == {"train": ["a", "b"], "val": [], "test": ["c"]}
    with pytest.raises(DataError, match="not assigned.*d"):
        load_split_file(f, ["a", "b", "c", "d"])
    f.write_text(json.dumps({"train": ["a", "b"], "test": ["b", "c"]}))
    with pytest.raises(DataError, match="split.json.*patient b is in both"):
        load_split_file(f, ["a", "b", "c"])
    f.write_text(json.dumps({"train": ["a", "x"], "test": ["b", "c"]}))
    with pytest.raises(DataError, match="not in the dataset: x"):
        load_split_file(f, ["a", "b", "c"])
    f.write_text("{not json")
    with pytest.raises(DataError, match="split.json is not valid JSON"):
        load_split_file(f, ["a"])
