"""`prepare` passes the KiTS release through to the reader and keys the fingerprint on it."""

from __future__ import annotations

import pytest
from nifti_factory import make_kits

from iac.config import PrepareConfig
from iac.data.prepare import prepare_dataset


@pytest.fixture(scope="module")
def kits19(tmp_path_factory):
    root = tmp_path_factory.mktemp("kits19")
    make_kits(root, cases=tuple(range(6)))
    return root


def _prepare(source, out, **kw):
    return prepare_dataset(PrepareConfig(dataset="kits", source=source, out=out, workers=1, **kw), progress=False)


def test_auto_detects_kits19_and_an_explicit_release_wins(kits19, tmp_path):
    auto = _prepare(kits19, tmp_path / "auto")
    assert set(auto.manifest["label_names"].values()) == {"background", "kidney", "tumour"}
    forced = _prepare(kits19, tmp_path / "k23", kits_version="23")
    assert set(forced.manifest["label_names"].values()) == {"background", "kidney", "tumour", "cyst"}
    assert forced.fingerprint != auto.fingerprint


def test_auto_fingerprint_does_not_depend_on_the_new_option(kits19, tmp_path):
    from iac.data.prepare import _fingerprint_params

    assert "kits_version" not in _fingerprint_params(PrepareConfig(dataset="kits", source=kits19))
    assert "kits_version" not in _fingerprint_params(PrepareConfig())
    assert _fingerprint_params(PrepareConfig(dataset="kits", source=kits19, kits_version="19"))["kits_version"] == "19"


def test_bad_release_is_refused(kits19, tmp_path):
    with pytest.raises(ValueError, match="kits_version: .21. is not one of auto, 19, 23"):
        _prepare(kits19, tmp_path / "bad", kits_version="21")
