"""Phantom cohort: layout, labels, geometry, determinism; read through the ACDC reader."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from iac.data.layouts import get_layout
from iac.data.phantom import LABEL_NAMES, PhantomSpec, synthesize_patient, write_phantom

SPEC = PhantomSpec()


def test_patient_arrays_and_labels():
    p = synthesize_patient(1, seed=0, size=32)
    assert set(p["frames"]) == {p["ed"], p["es"]} and p["ed"] == 1 and p["es"] > 1
    for image, label in p["frames"].values():
        z = image.shape[0]
        assert SPEC.slices[0] <= z <= SPEC.slices[1]
        assert image.shape == label.shape == (z, 32, 32)
        assert image.dtype == np.float32 and label.dtype == np.uint8
        assert np.isfinite(image).all()
        assert set(np.unique(label)) <= set(LABEL_NAMES)
        assert {1, 2, 3} <= set(np.unique(label[0]))  # the base slice holds every structure
    assert p["spacing"][:2] == (SPEC.spacing_xy, SPEC.spacing_xy)
    assert SPEC.spacing_z[0] <= p["spacing"][2] <= SPEC.spacing_z[1]


def test_contraction_and_taper():
    p = synthesize_patient(2, seed=0, size=48)
    (_, ed), (_, es) = p["frames"][p["ed"]], p["frames"][p["es"]]
    assert (es == 3).sum() < (ed == 3).sum()  # LV blood pool shrinks at end-systole
    lv_area = (ed == 3).sum(axis=(1, 2))
    assert lv_area[0] > lv_area[-1]  # base larger than apex


def test_deterministic_per_seed_and_varies_between_patients():
    a = synthesize_patient(3, seed=5, size=24)
    b = synthesize_patient(3, seed=5, size=24)
    c = synthesize_patient(3, seed=6, size=24)
    d = synthesize_patient(4, seed=5, size=24)
    for f in a["frames"]:
        np.testing.assert_array_equal(a["frames"][f][0], b["frames"][f][0])
        np.testing.assert_array_equal(a["frames"][f][1], b["frames"][f][1])
    assert not np.array_equal(a["frames"][1][1], c["frames"][1][1])
    assert not np.array_equal(a["frames"][1][1], d["frames"][1][1])


def test_written_in_acdc_layout_and_read_back(tmp_path):
    root = write_phantom(tmp_path / "database", n_patients=2, seed=0, size=24)
    folder = root / "training" / "patient001"
    info = (folder / "Info.cfg").read_text()
    assert "ED: 1" in info and "ES: " in info
    disc = get_layout("acdc")(root, {})
    assert [c.case_id for c in disc.cases][:2] == ["patient001_frame01", f"patient001_frame{int(info.split('ES: ')[1].split()[0]):02d}"]
    assert {c.frame for c in disc.cases} == {"ED", "ES"}
    img = sitk.ReadImage(str(disc.cases[0].images[0]))
    lab = sitk.ReadImage(str(disc.cases[0].label))
    assert img.GetSpacing()[:2] == (SPEC.spacing_xy, SPEC.spacing_xy)
    assert img.GetSize() == lab.GetSize() and img.GetSize()[:2] == (24, 24)
    assert np.allclose(img.GetDirection(), lab.GetDirection())


def test_random_stream_order_is_pinned():
    # The origin is the last draw of a patient's stream, so it moves if any earlier
    # draw is added, removed or reordered (which must come with a PHANTOM_VERSION bump).
    p = synthesize_patient(1, seed=0, size=32)
    assert (p["frames"][1][0].shape[0], p["es"]) == (12, 15)
    assert p["spacing"][2] == pytest.approx(8.671414150618679, rel=1e-12)
    assert p["origin"] == pytest.approx((-57.95949945372749, 57.74651128238194, -66.86343018216311), rel=1e-12)
    q = synthesize_patient(2, seed=7, size=64)
    assert (q["frames"][1][0].shape[0], q["es"]) == (10, 10)
    assert q["origin"] == pytest.approx((20.512060832485705, -125.14582386547897, -34.06555484817751), rel=1e-12)
