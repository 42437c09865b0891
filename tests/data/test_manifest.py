"""The manifest's save/load pair: exact round trip, atomic replacement, clear refusals."""

from __future__ import annotations

import json

import pytest

from iac.data.layouts.base import DataError
from iac.data.manifest import MANIFEST, manifest_or_none, read_manifest, write_manifest

MANIFEST_DATA = {
    "format_version": 1,
    "name": "phantom",
    "label_names": {"0": "background", "1": "LV"},
    "preprocessing": {"target_spacing": [1.5, 1.5], "slice_size": 32, "ct_clip": []},
    "cases": {"p1_ED": {"patient": "p1", "frame": "ED", "n_slices": 2}},
    "splits": {"train": ["p1"], "val": [], "test": []},
    "fingerprint": "ab" * 32,
}


def test_round_trip_is_exact(tmp_path):
    path = write_manifest(tmp_path, MANIFEST_DATA)
    assert path == tmp_path / MANIFEST
    assert read_manifest(tmp_path) == MANIFEST_DATA
    assert path.read_text() == json.dumps(MANIFEST_DATA, indent=2)


def test_write_replaces_and_leaves_no_temporary_file(tmp_path):
    write_manifest(tmp_path, {"fingerprint": "old"})
    write_manifest(tmp_path, MANIFEST_DATA)
    assert read_manifest(tmp_path)["fingerprint"] == MANIFEST_DATA["fingerprint"]
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST]


def test_failed_write_keeps_the_old_manifest(tmp_path):
    write_manifest(tmp_path, MANIFEST_DATA)
    with pytest.raises(TypeError):
        write_manifest(tmp_path, {"not json": object()})
    assert read_manifest(tmp_path) == MANIFEST_DATA
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST]


def test_missing_or_invalid_manifest(tmp_path):
    with pytest.raises(DataError, match="is not a prepared dataset: manifest.json is missing"):
        read_manifest(tmp_path)
    assert manifest_or_none(tmp_path) is None
    (tmp_path / MANIFEST).write_text("{ not json")
    with pytest.raises(DataError, match=r"manifest\.json is not valid JSON"):
        read_manifest(tmp_path)
    assert manifest_or_none(tmp_path) is None
