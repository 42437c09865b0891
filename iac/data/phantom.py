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
from typing import NamedTuple

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


@dataclass(frozen=True)
class _Draws:
    """The per-patient random parameters (see :func:`_draw_parameters`); lengths in pixels."""

    nz: int  # slices in the stack
    spacing_z: float  # slice spacing in mm
    c0: np.ndarray  # (2,) heart centre (y, x) at the base
    drift: np.ndarray  # (2,) in-plane drift (y, x) of the centre from base to apex
    angle: float  # direction of the RV from the LV centre (rad)
    ell: float  # axis ratio of the LV cross-section
    harm: np.ndarray  # (2,) amplitudes of the 2nd/3rd angular harmonics
    phase: np.ndarray  # (2,) phases of the 2nd/3rd angular harmonics
    r_lv: float  # ED LV cavity radius at the base
    wall: float  # ED myocardial thickness
    t_epi: float  # where the epicardium closes (fraction of stack length)
    t_cav: float  # where the LV cavity closes
    t_rv: float  # where the RV closes
    rv_span: float  # RV tangential half-axis / epicardial radius
    rv_depth: float  # RV radial half-axis / epicardial radius
    es_cav: float  # ES/ED LV cavity radius ratio
    es_rv: float  # ES/ED RV size ratio
    es: int  # ES frame number
    pap_angles: np.ndarray  # (2,) papillary muscle directions (rad)
    lv_blood: float  # LV blood intensity
    rv_blood: float  # RV blood intensity
    myo: float  # myocardium intensity
    blur_xy: float  # in-plane partial-volume blur std (pixels)
    noise: float  # Rician noise std
    bias_coef: np.ndarray  # (6,) bias-field polynomial coefficients
    vessel_angle: float  # direction of the vessel from the heart centre (rad)


class _Grid(NamedTuple):
    """Voxel coordinates, broadcastable to the volume (Z, N, N)."""

    t: np.ndarray  # (Z, 1, 1) position along the stack: 0 = base, 1 = apex
    yy: np.ndarray  # (1, N, N) row index
    xx: np.ndarray  # (1, N, N) column index

    @property
    def shape(self) -> tuple[int, int, int]:
        """The volume shape (Z, N, N)."""
        return (self.t.shape[0], self.yy.shape[1], self.yy.shape[2])


class _Heart(NamedTuple):
    """Heart-centred coordinates per slice."""

    cy: np.ndarray  # (Z, 1, 1) centre row
    cx: np.ndarray  # (Z, 1, 1) centre column
    u: np.ndarray  # (Z, N, N) along the LV -> RV direction (pixels)
    v: np.ndarray  # (Z, N, N) across it (pixels)
    phi: np.ndarray  # (Z, N, N) angle of (u, v)
    rho: np.ndarray  # (Z, N, N) LV radius coordinate: elliptic, with harmonic contour wobble


class _Surroundings(NamedTuple):
    """What lies around the heart, shared by both frames."""

    body: np.ndarray  # (1, N, N) bool, inside the body outline
    background: np.ndarray  # (Z, N, N) intensity of body, lungs and air
    blood_tex: np.ndarray  # (Z, N, N) multiplicative blood-pool texture around 1
    fat_sector: np.ndarray  # (Z, N, N) bool, angular sectors where epicardial fat lies
    vessel: np.ndarray  # (Z, N, N) bool, bright vessel in the basal slices


class _Tissues(NamedTuple):
    """Tissue masks of one frame, all (Z, N, N) bool."""

    cavity: np.ndarray  # LV blood pool (label 3)
    epi: np.ndarray  # inside the LV epicardium (label 2 outside the cavity)
    rv_cav: np.ndarray  # RV blood pool (label 1)
    rv_wall: np.ndarray  # RV free wall (labelled background, looks like myocardium)
    pap: np.ndarray  # papillary muscles (labelled LV, look like myocardium)
    fat: np.ndarray  # epicardial fat


def _draw_parameters(rng: np.random.Generator, spec: PhantomSpec, n: int) -> _Draws:
    """Draw the patient's anatomy, tissue intensities and acquisition parameters.

    The draws come first from the patient's stream, in this exact order; changing
    it changes every phantom (and would need a :data:`PHANTOM_VERSION` bump).
    """
    nz = int(rng.integers(spec.slices[0], spec.slices[1] + 1))
    sz = _u(rng, spec.spacing_z)
    # Heart placement: jittered centre drifting towards the apex, random rotation.
    c0 = n / 2 + rng.normal(0.0, spec.center_jitter * n, size=2)
    drift = rng.uniform(-spec.apex_drift, spec.apex_drift, size=2) * n
    angle = float(rng.uniform(0.0, 2 * np.pi))
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
    return _Draws(
        nz=nz, spacing_z=sz, c0=c0, drift=drift, angle=angle, ell=ell, harm=harm, phase=phase,
        r_lv=r_lv, wall=wall, t_epi=t_epi, t_cav=t_cav, t_rv=t_rv, rv_span=rv_span, rv_depth=rv_depth,
        es_cav=es_cav, es_rv=es_rv, es=es, pap_angles=pap_angles, lv_blood=lv_blood, rv_blood=rv_blood,
        myo=myo, blur_xy=blur_xy, noise=noise, bias_coef=bias_coef, vessel_angle=vessel_angle,
    )


def _grid(nz: int, n: int) -> _Grid:
    """Coordinates of a stack of ``nz`` slices of N x N pixels."""
    t = (np.arange(nz) / max(nz - 1, 1)).reshape(nz, 1, 1)  # 0 = base, 1 = apex, (Z, 1, 1)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    return _Grid(t, yy[None], xx[None])


def _heart_coordinates(d: _Draws, grid: _Grid) -> _Heart:
    """Rotated and elliptic coordinates around the LV centre, which drifts from base to apex."""
    cy, cx = d.c0[0] + d.drift[0] * grid.t, d.c0[1] + d.drift[1] * grid.t  # (Z, 1, 1)
    u, v, phi = _polar(grid.yy, grid.xx, cy, cx, d.angle)
    shape_mod = 1.0 + d.harm[0] * np.cos(2 * phi + d.phase[0]) + d.harm[1] * np.cos(3 * phi + d.phase[1])
    rho = np.sqrt((u * np.sqrt(d.ell)) ** 2 + (v / np.sqrt(d.ell)) ** 2) / shape_mod  # (Z, N, N)
    return _Heart(cy, cx, u, v, phi, rho)


def _surroundings(
    rng: np.random.Generator, spec: PhantomSpec, d: _Draws, grid: _Grid, phi: np.ndarray
) -> _Surroundings:
    """Body, lungs, textures, fat sectors and vessel; draws the two texture fields, then the fat sectors."""
    yy, xx, t, shape3 = grid.yy, grid.xx, grid.t, grid.shape
    n = shape3[1]
    texture = spec.texture[0] + (spec.texture[1] - spec.texture[0]) * _smooth_field(rng, shape3, spec.texture_grid)
    body = ((yy - n / 2) / (0.55 * n)) ** 2 + ((xx - n / 2) / (0.6 * n)) ** 2 < 1.0
    background = np.where(body, texture, 0.02)
    for side in (-1.0, 1.0):  # lungs: dark ellipses left and right of the heart
        lung = ((yy - n / 2) / (0.3 * n)) ** 2 + ((xx - n / 2 - side * 0.38 * n) / (0.16 * n)) ** 2 < 1.0
        background = np.where(lung & body, 0.05 + 0.05 * texture, background)
    blood_tex = 1.0 + spec.blood_texture * (2 * _smooth_field(rng, shape3, n // 4) - 1)
    fat_sector = np.cos(phi * 2 + rng.uniform(0, 2 * np.pi)) > rng.uniform(-0.2, 0.4)
    vy = d.c0[0] + np.sin(d.vessel_angle) * 0.3 * n
    vx = d.c0[1] + np.cos(d.vessel_angle) * 0.3 * n
    vessel = ((yy - vy) ** 2 + (xx - vx) ** 2 < (0.07 * n) ** 2) & (t < 0.4)
    return _Surroundings(body, background, blood_tex, fat_sector, vessel)


def _bias_field(coef: np.ndarray, grid: _Grid) -> np.ndarray:
    """Bias field (Z, N, N): exp of a quadratic polynomial in normalised (x, y) plus a z ramp."""
    n = grid.shape[1]
    xn, yn = (grid.xx / (n - 1)) * 2 - 1, (grid.yy / (n - 1)) * 2 - 1
    zn = grid.t * 2 - 1
    return np.exp(
        coef[0] * xn + coef[1] * yn + coef[2] * xn * yn
        + coef[3] * xn**2 + coef[4] * yn**2 + coef[5] * zn
    )


def _taper(t: np.ndarray, end: float) -> np.ndarray:
    """Radius factor (Z, 1, 1) closing a structure at stack position ``end`` (elliptic profile)."""
    return np.sqrt(np.clip(1.0 - (t / end) ** 2, 0.0, 1.0))


def _tissues(
    spec: PhantomSpec,
    d: _Draws,
    grid: _Grid,
    heart: _Heart,
    around: _Surroundings,
    cav_ratio: float,
    rv_ratio: float,
) -> _Tissues:
    """Tissue masks of one frame whose LV cavity and RV are scaled by ``cav_ratio`` and ``rv_ratio``."""
    # Myocardial area is conserved under contraction: the wall thickens.
    r_cav0 = d.r_lv * cav_ratio
    r_epi0 = np.sqrt(r_cav0**2 + (d.r_lv + d.wall) ** 2 - d.r_lv**2)
    r_epi = r_epi0 * _taper(grid.t, d.t_epi)  # (Z, 1, 1)
    r_cav = np.minimum(r_cav0 * _taper(grid.t, d.t_cav), r_epi - 1.0)
    cavity = heart.rho < r_cav
    epi = heart.rho < r_epi
    # RV: ellipse centred beside the LV, minus the LV epicardium and a gap of one wall.
    rs = r_epi0 * rv_ratio * _taper(grid.t, d.t_rv)
    ru = heart.u - (r_epi0 * 0.9)
    rv_rho = np.sqrt(
        (ru / np.maximum(d.rv_depth * rs, 1e-6)) ** 2 + (heart.v / np.maximum(d.rv_span * rs, 1e-6)) ** 2
    )
    rv_outer = (rv_rho < 1.0 + spec.rv_wall / np.maximum(d.rv_depth * rs, 1e-6)) & (rs > 0.5)
    rv_cav = (rv_rho < 1.0) & (rs > 0.5) & ~epi
    rv_wall = rv_outer & ~rv_cav & ~epi
    # Papillary muscles: two small dark disks inside the cavity (labelled LV).
    yy, xx = grid.yy, grid.xx
    pap = np.zeros(grid.shape, dtype=bool)
    for a in d.pap_angles:
        py = heart.cy + np.sin(a) * 0.6 * r_cav
        px = heart.cx + np.cos(a) * 0.6 * r_cav
        pap |= ((yy - py) ** 2 + (xx - px) ** 2 < (spec.papillary * r_cav) ** 2) & cavity
    fat = (heart.rho < r_epi + 1.5) & ~epi & around.fat_sector & ~rv_outer & around.body
    return _Tissues(cavity, epi, rv_cav, rv_wall, pap, fat)


def _label_map(tissues: _Tissues) -> np.ndarray:
    """Label map uint8 (Z, N, N): 0 background, 1 RV, 2 myocardium, 3 LV (later masks overwrite)."""
    label = np.zeros(tissues.cavity.shape, dtype=np.uint8)
    label[tissues.epi] = 2
    label[tissues.cavity] = 3
    label[tissues.rv_cav] = 1
    return label


def _render(
    rng: np.random.Generator,
    spec: PhantomSpec,
    d: _Draws,
    around: _Surroundings,
    tissues: _Tissues,
    bias: np.ndarray,
) -> np.ndarray:
    """The MR image float32 (Z, N, N) of one frame: paint, blur, bias, Rician noise; draws the noise."""
    img = around.background.copy()
    # Painted back to front: later tissues cover earlier ones.
    img = np.where(around.vessel, d.lv_blood * around.blood_tex, img)
    img = np.where(tissues.fat, spec.fat, img)
    img = np.where(tissues.rv_wall | tissues.epi, d.myo, img)
    img = np.where(tissues.rv_cav, d.rv_blood * around.blood_tex, img)
    img = np.where(tissues.cavity, d.lv_blood * around.blood_tex, img)
    img = np.where(tissues.pap, d.myo, img)
    img = ndimage.gaussian_filter(img, sigma=(spec.blur_z, d.blur_xy, d.blur_xy), mode="nearest")
    img = img * bias
    real = img + rng.normal(0.0, d.noise, size=img.shape)
    imag = rng.normal(0.0, d.noise, size=img.shape)
    img = np.sqrt(real**2 + imag**2)  # Rician magnitude
    return (img * spec.scale).astype(np.float32)


def _orientation(rng: np.random.Generator) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """An oblique but orthonormal direction (9,) and an arbitrary origin (3,), as scanners write.

    Returns:
        ``(origin, direction)``; the direction is drawn first.
    """
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:  # a rotation, not a reflection
        q[:, 0] = -q[:, 0]
    origin = tuple(float(x) for x in rng.normal(0.0, 50.0, size=3))
    return origin, tuple(float(x) for x in q.reshape(-1))


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
    # One stream per patient, consumed in a fixed order: parameters, surroundings,
    # the noise of ED then ES, the orientation. Reordering changes every phantom.
    rng = np.random.default_rng([seed, index])
    d = _draw_parameters(rng, spec, size)
    grid = _grid(d.nz, size)
    heart = _heart_coordinates(d, grid)
    around = _surroundings(rng, spec, d, grid, heart.phi)
    bias = _bias_field(d.bias_coef, grid)
    frames = {}
    for frame_no, cav_ratio, rv_ratio in ((1, 1.0, 1.0), (d.es, d.es_cav, d.es_rv)):
        tissues = _tissues(spec, d, grid, heart, around, cav_ratio, rv_ratio)
        frames[frame_no] = (_render(rng, spec, d, around, tissues, bias), _label_map(tissues))
    origin, direction = _orientation(rng)
    return {
        "frames": frames,
        "ed": 1,
        "es": d.es,
        "spacing": (spec.spacing_xy, spec.spacing_xy, d.spacing_z),
        "origin": origin,
        "direction": direction,
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
        write_acdc_patient(root, index, {"n_frames": spec.n_frames, **synthesize_patient(index, seed, size, spec)})
    return root


def write_acdc_patient(root: Path, index: int, patient: dict) -> Path:
    """Write one synthetic patient as ACDC distributes it: ``root/training/patientNNN/``.

    Args:
        root: folder playing ACDC's ``database``.
        index: patient number (1-based).
        patient: ``synthesize_patient``'s dict plus ``n_frames`` (and optionally ``group``).

    Returns:
        The patient's folder.
    """
    pid = f"patient{index:03d}"
    folder = Path(root) / "training" / pid
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Info.cfg").write_text(
        f"ED: {patient['ed']}\nES: {patient['es']}\nGroup: {patient.get('group', 'NOR')}\n"
        f"Height: 170.0\nNbFrame: {patient['n_frames']}\nWeight: 70.0\n"
    )
    for frame_no, (image, label) in patient["frames"].items():
        stem = f"{pid}_frame{frame_no:02d}"
        # int16 as scanners store cine MR; the scale keeps the rounding error small.
        sitk.WriteImage(_to_image(np.round(image).astype(np.int16), patient), str(folder / f"{stem}.nii.gz"))
        sitk.WriteImage(_to_image(label, patient), str(folder / f"{stem}_gt.nii.gz"))
    return folder
