"""Synthetic cardiac short-axis MR cohort in the ACDC raw layout.

``write_phantom(root, n_patients, seed, size)`` writes one folder per patient,
``root/training/patientNNN/`` with ``patientNNN_frameXX.nii.gz``, the matching
``_gt`` label map and ``Info.cfg`` (ED/ES frame numbers), exactly as the ACDC
``database`` folder is distributed; ``prepare`` then reads it back through the
ACDC reader, so the default run exercises the real code path.

Each patient is an anisotropic stack (base at slice 0, apex at the last slice)
of the left-ventricular blood pool, the myocardial ring around it and the
right-ventricular crescent beside it, in textured surroundings (body, lungs,
epicardial fat, a bright vessel). Shape, size, position and rotation vary per
patient and taper from base to apex; the end-systolic frame contracts the
cavities and thickens the wall. The image is blurred (partial volume, in-plane
and through-plane), multiplied by a smooth bias field and given Rician noise.
Labels: 0 background, 1 RV, 2 myocardium, 3 LV.

What makes it hard on purpose: the thin RV free wall is labelled background yet
looks like myocardium; RV blood is darker than LV blood; papillary muscles in
the LV cavity look like myocardium yet are labelled LV; fat touches the
epicardium in places; apical slices are small and smeared by through-plane blur.

Every patient draws from its own stream ``default_rng([seed, index])``, so a
patient's volumes do not depend on the cohort size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

# Bumped whenever the generator's output changes (part of the data fingerprint).
PHANTOM_VERSION = 1

LABEL_NAMES = {0: "background", 1: "RV", 2: "myocardium", 3: "LV"}


@dataclass(frozen=True)
class PhantomSpec:
    """Anatomy and acquisition ranges of the phantom (lengths relative to the matrix side N)."""

    spacing_xy: float = 1.5  # in-plane spacing in mm (fixed: the cohort needs no resampling)
    spacing_z: tuple[float, float] = (7.0, 10.0)  # slice spacing range in mm
    slices: tuple[int, int] = (8, 16)  # number of slices per stack (inclusive)
    center_jitter: float = 0.06  # heart centre offset (std, fraction of N)
    apex_drift: float = 0.05  # in-plane drift of the centre from base to apex (max, fraction of N)
    lv_radius: tuple[float, float] = (0.11, 0.16)  # ED LV cavity radius at the base (fraction of N)
    wall: tuple[float, float] = (0.04, 0.06)  # ED myocardial thickness (fraction of N)
    ellipticity: tuple[float, float] = (0.85, 1.18)  # axis ratio of the LV cross-section
    harmonics: float = 0.05  # std of the 2nd/3rd angular harmonics of the contours
    apex_end: tuple[float, float] = (1.04, 1.2)  # where the epicardium closes (fraction of stack length)
    cavity_end: tuple[float, float] = (0.88, 1.0)  # where the LV cavity closes
    rv_end: tuple[float, float] = (0.65, 0.9)  # where the RV closes
    rv_span: tuple[float, float] = (1.1, 1.5)  # RV tangential half-axis / epicardial radius
    rv_depth: tuple[float, float] = (0.5, 0.8)  # RV radial half-axis / epicardial radius
    rv_wall: float = 1.0  # RV free-wall thickness in pixels (labelled background)
    es_cavity: tuple[float, float] = (0.6, 0.78)  # ES/ED LV cavity radius ratio
    es_rv: tuple[float, float] = (0.6, 0.8)  # ES/ED RV size ratio
    es_frame: tuple[int, int] = (9, 15)  # ES frame number range (ED is frame 1)
    n_frames: int = 30  # frames of the (virtual) cine sequence
    lv_blood: tuple[float, float] = (0.75, 0.95)  # LV blood intensity
    rv_blood_ratio: tuple[float, float] = (0.7, 0.9)  # RV blood / LV blood intensity
    myo: tuple[float, float] = (0.3, 0.42)  # myocardium intensity
    fat: float = 0.7  # epicardial fat intensity
    papillary: float = 0.12  # papillary muscle radius (fraction of the cavity radius)
    texture_grid: int = 8  # control points per side of the smooth surroundings texture
    texture: tuple[float, float] = (0.12, 0.5)  # intensity range of the surroundings
    blood_texture: float = 0.08  # relative amplitude of the blood-pool texture
    blur_xy: tuple[float, float] = (0.5, 0.9)  # partial-volume blur std in-plane (pixels)
    blur_z: float = 0.35  # through-plane partial-volume blur std (slices)
    bias: float = 0.18  # std of the bias-field polynomial coefficients
    noise: tuple[float, float] = (0.04, 0.08)  # Rician noise std relative to LV blood
    scale: float = 1000.0  # stored intensity = model intensity x scale (int16 files)


def _u(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _polar(yy: np.ndarray, xx: np.ndarray, cy: np.ndarray, cx: np.ndarray, angle: float):
    """Rotated coordinates ``(u, v)`` (pixels) and angle ``phi`` around per-slice centres.

    Shapes: ``yy, xx`` (1, N, N); ``cy, cx`` (Z, 1, 1); outputs (Z, N, N).
    """
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u = c * dx + s * dy
    v = -s * dx + c * dy
    return u, v, np.arctan2(v, u)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], grid: int) -> np.ndarray:
    """Smooth random field in [0, 1] of ``shape`` (Z, N, N), cubic-upsampled from a coarse grid."""
    z, n, _ = shape
    coarse = rng.random((z, grid, grid))
    field = ndimage.zoom(coarse, (1.0, n / grid, n / grid), order=3, mode="reflect")[:, :n, :n]
    lo, hi = field.min(), field.max()
    return (field - lo) / max(hi - lo, np.finfo(np.float32).eps)


def synthesize_patient(index: int, seed: int, size: int, spec: PhantomSpec = PhantomSpec()) -> dict:
    """One phantom patient: both frames as arrays plus acquisition metadata.

    Args:
        index: patient number (1-based); selects the patient's random stream.
        seed: cohort seed.
        size: in-plane matrix side N in pixels.
        spec: anatomy and acquisition ranges.

    Returns:
        ``{"frames": {frame_no: (image float32 (Z, N, N), label uint8 (Z, N, N))},
        "ed": int, "es": int, "spacing": (x, y, z), "origin": (3,), "direction": (9,)}``.
    """
    rng = np.random.default_rng([seed, index])
    n = size
    nz = int(rng.integers(spec.slices[0], spec.slices[1] + 1))
    sz = _u(rng, spec.spacing_z)
    t = (np.arange(nz) / max(nz - 1, 1)).reshape(nz, 1, 1)  # 0 = base, 1 = apex, (Z, 1, 1)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    yy, xx = yy[None], xx[None]  # (1, N, N)

    # Heart placement: jittered centre drifting towards the apex, random rotation.
    c0 = n / 2 + rng.normal(0.0, spec.center_jitter * n, size=2)
    drift = rng.uniform(-spec.apex_drift, spec.apex_drift, size=2) * n
    cy, cx = c0[0] + drift[0] * t, c0[1] + drift[1] * t  # (Z, 1, 1)
    angle = float(rng.uniform(0.0, 2 * np.pi))  # direction of the RV from the LV centre
    ell = _u(rng, spec.ellipticity)
    harm = rng.normal(0.0, spec.harmonics, size=2)
    phase = rng.uniform(0.0, 2 * np.pi, size=2)
    r_lv, wall = _u(rng, spec.lv_radius) * n, _u(rng, spec.wall) * n
    t_epi, t_cav, t_rv = _u(rng, spec.apex_end), _u(rng, spec.cavity_end), _u(rng, spec.rv_end)
    rv_span, rv_depth = _u(rng, spec.rv_span), _u(rng, spec.rv_depth)
    es_cav, es_rv = _u(rng, spec.es_cavity), _u(rng, spec.es_rv)
    es = int(rng.integers(spec.es_frame[0], spec.es_frame[1] + 1))
    pap_angles = rng.uniform(0.0, 2 * np.pi, size=2)

    # Tissue intensities and acquisition of this patient.
    lv_blood = _u(rng, spec.lv_blood)
    rv_blood = lv_blood * _u(rng, spec.rv_blood_ratio)
    myo = _u(rng, spec.myo)
    blur_xy = _u(rng, spec.blur_xy)
    noise = _u(rng, spec.noise) * lv_blood
    bias_coef = rng.normal(0.0, spec.bias, size=6)
    vessel_angle = angle + np.pi + rng.uniform(-1.0, 1.0)  # roughly opposite the RV

    u, v, phi = _polar(yy, xx, cy, cx, angle)
    shape_mod = 1.0 + harm[0] * np.cos(2 * phi + phase[0]) + harm[1] * np.cos(3 * phi + phase[1])
    rho = np.sqrt((u * np.sqrt(ell)) ** 2 + (v / np.sqrt(ell)) ** 2) / shape_mod  # (Z, N, N)

    def taper(end: float) -> np.ndarray:
        return np.sqrt(np.clip(1.0 - (t / end) ** 2, 0.0, 1.0))  # (Z, 1, 1)

    # Shared surroundings (the same for both frames): body, lungs, texture.
    shape3 = (nz, n, n)
    texture = spec.texture[0] + (spec.texture[1] - spec.texture[0]) * _smooth_field(rng, shape3, spec.texture_grid)
    body = ((yy - n / 2) / (0.55 * n)) ** 2 + ((xx - n / 2) / (0.6 * n)) ** 2 < 1.0
    background = np.where(body, texture, 0.02)
    for side in (-1.0, 1.0):  # lungs: dark ellipses left and right of the heart
        lung = ((yy - n / 2) / (0.3 * n)) ** 2 + ((xx - n / 2 - side * 0.38 * n) / (0.16 * n)) ** 2 < 1.0
        background = np.where(lung & body, 0.05 + 0.05 * texture, background)
    blood_tex = 1.0 + spec.blood_texture * (2 * _smooth_field(rng, shape3, n // 4) - 1)
    fat_mask_angle = np.cos(phi * 2 + rng.uniform(0, 2 * np.pi)) > rng.uniform(-0.2, 0.4)
    vy = c0[0] + np.sin(vessel_angle) * 0.3 * n
    vx = c0[1] + np.cos(vessel_angle) * 0.3 * n
    vessel = ((yy - vy) ** 2 + (xx - vx) ** 2 < (0.07 * n) ** 2) & (t < 0.4)

    # Bias field: exp of a quadratic polynomial in normalised (x, y) plus a z ramp.
    xn, yn = (xx / (n - 1)) * 2 - 1, (yy / (n - 1)) * 2 - 1
    zn = t * 2 - 1
    bias = np.exp(
        bias_coef[0] * xn + bias_coef[1] * yn + bias_coef[2] * xn * yn
        + bias_coef[3] * xn**2 + bias_coef[4] * yn**2 + bias_coef[5] * zn
    )

    frames = {}
    for frame_no, cav_ratio, rv_ratio in ((1, 1.0, 1.0), (es, es_cav, es_rv)):
        # Myocardial area is conserved under contraction: the wall thickens.
        r_cav0 = r_lv * cav_ratio
        r_epi0 = np.sqrt(r_cav0**2 + (r_lv + wall) ** 2 - r_lv**2)
        r_epi = r_epi0 * taper(t_epi)  # (Z, 1, 1)
        r_cav = np.minimum(r_cav0 * taper(t_cav), r_epi - 1.0)
        cavity = rho < r_cav
        epi = rho < r_epi
        # RV: ellipse centred beside the LV, minus the LV epicardium and a gap of one wall.
        rs = r_epi0 * rv_ratio * taper(t_rv)
        ru = u - (r_epi0 * 0.9)
        rv_rho = np.sqrt((ru / np.maximum(rv_depth * rs, 1e-6)) ** 2 + (v / np.maximum(rv_span * rs, 1e-6)) ** 2)
        rv_outer = (rv_rho < 1.0 + spec.rv_wall / np.maximum(rv_depth * rs, 1e-6)) & (rs > 0.5)
        rv_cav = (rv_rho < 1.0) & (rs > 0.5) & ~epi
        rv_wall = rv_outer & ~rv_cav & ~epi
        # Papillary muscles: two small dark disks inside the cavity (labelled LV).
        pap = np.zeros(shape3, dtype=bool)
        for a in pap_angles:
            py = cy + np.sin(a) * 0.6 * r_cav
            px = cx + np.cos(a) * 0.6 * r_cav
            pap |= ((yy - py) ** 2 + (xx - px) ** 2 < (spec.papillary * r_cav) ** 2) & cavity
        fat = (rho < r_epi + 1.5) & ~epi & fat_mask_angle & ~rv_outer & body

        label = np.zeros(shape3, dtype=np.uint8)
        label[epi] = 2
        label[cavity] = 3
        label[rv_cav] = 1

        img = background.copy()
        img = np.where(vessel, lv_blood * blood_tex, img)
        img = np.where(fat, spec.fat, img)
        img = np.where(rv_wall | epi, myo, img)
        img = np.where(rv_cav, rv_blood * blood_tex, img)
        img = np.where(cavity, lv_blood * blood_tex, img)
        img = np.where(pap, myo, img)
        img = ndimage.gaussian_filter(img, sigma=(spec.blur_z, blur_xy, blur_xy), mode="nearest")
        img = img * bias
        real = img + rng.normal(0.0, noise, size=shape3)
        imag = rng.normal(0.0, noise, size=shape3)
        img = np.sqrt(real**2 + imag**2)  # Rician magnitude
        frames[frame_no] = ((img * spec.scale).astype(np.float32), label)

    # An oblique but orthonormal orientation and an arbitrary origin, as scanners write.
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    origin = tuple(float(x) for x in rng.normal(0.0, 50.0, size=3))
    return {
        "frames": frames,
        "ed": 1,
        "es": es,
        "spacing": (spec.spacing_xy, spec.spacing_xy, sz),
        "origin": origin,
        "direction": tuple(float(x) for x in q.reshape(-1)),
    }


def _to_image(array: np.ndarray, meta: dict) -> sitk.Image:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(meta["spacing"])
    img.SetOrigin(meta["origin"])
    img.SetDirection(meta["direction"])
    return img


def write_phantom(
    root: Path,
    n_patients: int = 34,
    seed: int = 0,
    size: int = 64,
    spec: PhantomSpec = PhantomSpec(),
) -> Path:
    """Write the phantom cohort in the ACDC raw layout.

    Args:
        root: folder playing ACDC's ``database``; ``root/training/patientNNN`` is written.
        n_patients: number of patients (numbered from 1).
        seed: cohort seed.
        size: in-plane matrix side in pixels.
        spec: anatomy and acquisition ranges.

    Returns:
        ``root`` (pass it to the ACDC reader).

    Raises:
        ValueError: for a non-positive ``n_patients`` or a matrix too small to hold a heart.
    """
    min_size = 2 * spec.texture_grid
    if n_patients < 1:
        raise ValueError(f"phantom n_patients must be >= 1, got {n_patients}")
    if size < min_size:
        raise ValueError(f"phantom size must be >= {min_size} pixels, got {size}")
    root = Path(root)
    for index in range(1, n_patients + 1):
        pid = f"patient{index:03d}"
        folder = root / "training" / pid
        folder.mkdir(parents=True, exist_ok=True)
        patient = synthesize_patient(index, seed, size, spec)
        (folder / "Info.cfg").write_text(
            f"ED: {patient['ed']}\nES: {patient['es']}\nGroup: NOR\n"
            f"Height: 170.0\nNbFrame: {spec.n_frames}\nWeight: 70.0\n"
        )
        for frame_no, (image, label) in patient["frames"].items():
            stem = f"{pid}_frame{frame_no:02d}"
            # int16 as scanners store cine MR; the scale keeps the rounding error small.
            sitk.WriteImage(_to_image(np.round(image).astype(np.int16), patient), str(folder / f"{stem}.nii.gz"))
            sitk.WriteImage(_to_image(label, patient), str(folder / f"{stem}_gt.nii.gz"))
    return root
