"""The ACDC-like test bed (phantom_variant=testbed): arrays, determinism, validation, prepared read-back."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk
from click.testing import CliRunner
from prepare_helpers import tiny_cfg

from iac.config import ConfigError, PrepareConfig, parse_prepare_options
from iac.data.layouts import get_layout
from iac.data.phantom import LABEL_NAMES
from iac.data.testbed import (
    ACDC_GROUPS,
    TestbedSpec,
    synthesize_testbed_patient,
    write_testbed,
)

SPEC = TestbedSpec()
QUIET = dataclasses.replace(  # no noise, blur, bias, ghost or blood texture: tissue values stay exact
    SPEC, noise=(0.0, 0.0), blur_xy=(0.0, 0.0), bias=0.0, ghost=(0.0, 0.0), blood_texture=0.0
)


def test_patient_arrays_labels_and_geometry():
    p = synthesize_testbed_patient(1, seed=0, size=32)
    assert set(p["frames"]) == {1, p["es"]} and 1 < p["es"] <= p["n_frames"]
    assert SPEC.n_frames[0] <= p["n_frames"] <= SPEC.n_frames[1]
    assert p["group"] in {g.name for g in ACDC_GROUPS}
    for image, label in p["frames"].values():
        z = image.shape[0]
        assert SPEC.slices[0] <= z <= SPEC.slices[1]
        assert image.shape == label.shape == (z, 32, 32)
        assert image.dtype == np.float32 and label.dtype == np.uint8
        assert np.isfinite(image).all() and image.min() >= 0
        assert set(np.unique(label)) <= set(LABEL_NAMES)
        assert {1, 2, 3} <= set(np.unique(label))
    # The field of view is fixed: a 32-pixel matrix has 80/32 times ACDC's spacing.
    lo, hi = (s * SPEC.reference_size / 32 for s in SPEC.spacing_xy)
    assert lo <= p["spacing"][0] == p["spacing"][1] <= hi
    assert SPEC.spacing_z[0] <= p["spacing"][2] <= SPEC.spacing_z[1]


def test_end_systole_contracts_and_groups_differ():
    groups = {}
    for index in range(1, 11):  # seed 5 draws all five groups among its first ten patients
        p = synthesize_testbed_patient(index, seed=5, size=24)
        (_, ed), (_, es) = p["frames"][1], p["frames"][p["es"]]
        assert (es == 3).sum() < (ed == 3).sum()  # the LV blood pool shrinks at end-systole
        groups.setdefault(p["group"], []).append((ed == 2).sum() / max((ed == 3).sum(), 1))
    assert set(groups) == {g.name for g in ACDC_GROUPS}
    assert min(groups["HCM"]) > max(groups["DCM"])  # thick wall, small cavity vs thin wall, large cavity


def test_partial_volume_mixes_tissues_inside_voxels():
    sharp = dataclasses.replace(QUIET, supersample=1, slab_samples=1)
    mixed = synthesize_testbed_patient(2, seed=0, size=32, spec=QUIET)
    pure = synthesize_testbed_patient(2, seed=0, size=32, spec=sharp)
    # Without sub-voxel sampling a voxel labelled LV holds blood or trabecula signal, nothing else;
    # with it, boundary voxels hold mixtures of the tissues they straddle.
    n_pure = len(np.unique(pure["frames"][1][0][pure["frames"][1][1] == 3]))
    n_mixed = len(np.unique(mixed["frames"][1][0][mixed["frames"][1][1] == 3]))
    assert n_pure <= 2 and n_mixed > 20


def test_deterministic_per_seed_and_varies():
    a = synthesize_testbed_patient(3, seed=5, size=24)
    b = synthesize_testbed_patient(3, seed=5, size=24)
    c = synthesize_testbed_patient(3, seed=6, size=24)
    d = synthesize_testbed_patient(4, seed=5, size=24)
    assert a["es"] == b["es"] and a["origin"] == b["origin"]
    for f in a["frames"]:
        np.testing.assert_array_equal(a["frames"][f][0], b["frames"][f][0])
        np.testing.assert_array_equal(a["frames"][f][1], b["frames"][f][1])
    assert not np.array_equal(a["frames"][1][1], c["frames"][1][1])
    assert not np.array_equal(a["frames"][1][1], d["frames"][1][1])


def test_random_stream_order_is_pinned():
    # The origin is the last draw of a patient's stream: it moves if any earlier draw is
    # added, removed or reordered (which must come with a TESTBED_VERSION bump).
    p = synthesize_testbed_patient(1, seed=0, size=32)
    assert (p["group"], p["frames"][1][0].shape[0], p["es"], p["n_frames"]) == ("DCM", 9, 14, 39)
    assert p["origin"] == pytest.approx((128.87078516258455, 33.06734810728174, 1.5823890724848295), rel=1e-9)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"noise": (0.1, 0.05)}, "testbed noise must be a range"),
        ({"supersample": 0}, "testbed supersample must be > 0"),
        ({"slices": (1, 4)}, "at least 2 slices"),
        ({"thickness": (12.0, 14.0)}, "cannot exceed the slice spacing"),
        ({"bias": -0.1}, "testbed bias must be >= 0"),
        ({"groups": ()}, "non-empty tuple of GroupSpec"),
    ],
)
def test_bad_spec_names_the_parameter(change, words):
    with pytest.raises(ValueError, match=words):
        dataclasses.replace(SPEC, **change)


def test_bad_cohort_and_variant_are_refused(tmp_path):
    with pytest.raises(ValueError, match="testbed size must be >= 16"):
        write_testbed(tmp_path / "db", n_patients=1, size=8)
    with pytest.raises(ValueError, match="testbed n_patients must be >= 1"):
        write_testbed(tmp_path / "db", n_patients=0)
    with pytest.raises(ConfigError, match="phantom_variant"):
        PrepareConfig(phantom_variant="testbd")
    with pytest.raises(ConfigError, match="phantom_size"):
        PrepareConfig(phantom_variant="testbed", phantom_size=8)
    from iac.cli import main

    res = CliRunner().invoke(main, ["prepare", "--out", str(tmp_path / "o"), "--phantom-variant", "v2"])
    assert res.exit_code == 2 and "--phantom-variant" in res.output and "testbed" in res.output
    assert not (tmp_path / "o").exists()
    assert parse_prepare_options("phantom_variant=testbed") == (("phantom_variant", "testbed"),)


def test_written_in_acdc_layout(tmp_path):
    root = write_testbed(tmp_path / "database", n_patients=2, seed=0, size=24)
    info = (root / "training" / "patient001" / "Info.cfg").read_text()
    assert "ED: 1" in info and "Group: DCM" in info and "NbFrame: 39" in info
    disc = get_layout("acdc")(root, {})
    assert {c.frame for c in disc.cases} == {"ED", "ES"} and len(disc.cases) == 4
    img, lab = sitk.ReadImage(str(disc.cases[0].images[0])), sitk.ReadImage(str(disc.cases[0].label))
    assert img.GetSize() == lab.GetSize() and img.GetSize()[:2] == (24, 24)
    assert img.GetSpacing() == pytest.approx(lab.GetSpacing())


def test_prepared_testbed_reads_back(tmp_path):
    from iac.data.prepare import _fingerprint_params, prepare_dataset
    from iac.data.store import PreparedDataset

    cfg = tiny_cfg(tmp_path / "tb", phantom_variant="testbed", phantom_seed=7)
    first = prepare_dataset(cfg, progress=False)
    data = PreparedDataset(first.root)
    assert data.name == "phantom" and data.label_names == LABEL_NAMES and data.in_channels == 1
    assert len(data.patients()) == 4 and len(data.cases()) == 8
    case = data.cases("train")[0].case_id
    image, label = data.image(case), data.label(case)
    assert image.shape[-2:] == label.shape[-2:] and {1, 2, 3} <= set(np.unique(label))
    assert np.isfinite(image).all() and 0.5 < float(image.std()) < 2.0  # z-scored per volume, then padded
    # Same settings: reused; the classic phantom of the same seed is other data.
    assert prepare_dataset(cfg, progress=False).reused
    classic = prepare_dataset(tiny_cfg(tmp_path / "classic", phantom_seed=7), progress=False)
    assert classic.fingerprint != first.fingerprint
    # The classic phantom's fingerprint parameters are those it had before variants existed.
    assert "phantom_variant" not in _fingerprint_params(tiny_cfg(tmp_path / "x"))
    assert _fingerprint_params(cfg)["phantom_variant"] == "testbed"
