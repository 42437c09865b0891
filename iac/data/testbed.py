"""The test bed: a harder, ACDC-like cine MR short-axis cohort (``phantom_variant=testbed``).

The classic phantom (:mod:`iac.data.phantom`) draws its anatomy as fractions of
the matrix and paints it on the pixel grid. The test bed is built to imitate
the acquisition characteristics ACDC publishes, so that what the network has to
get right is what it has to get right on the real data:

- **Anatomy in millimetres, per pathology group.** Each patient belongs to one
  of ACDC's five groups (NOR, MINF, DCM, HCM, RV; equal shares, as in ACDC's 20
  patients per group) whose ranges of LV cavity size, wall thickness, ejection
  fraction and RV size follow the groups' clinical definitions. MINF patients
  have an infarcted sector: thinned and akinetic (it neither moves nor thickens
  at end-systole).
- **Across frames.** End-diastole and end-systole differ by radial contraction
  (the wall thickens, myocardial area conserved), by the base descending
  towards the apex (basal end-systolic slices cut the atrium: bright blood
  labelled background) and by a breath-hold shift of every slice.
- **Partial volume for real.** Each tissue is painted on a grid ``supersample``
  times finer in-plane and at ``slab_samples`` depths through the slice
  thickness, then averaged into the voxel; the label is the tissue that fills
  most of the voxel at the slice centre. Thin structures (the RV free wall,
  about 2 pixels, labelled background like ACDC; LV trabeculae, labelled LV;
  the trabeculated, irregular RV endocardium) end up as sub-pixel mixtures
  whose boundaries need fine, high-resolution detail.
- **Acquisition.** In-plane spacing and slice spacing in ACDC's ranges,
  a point-spread blur, a smooth multiplicative bias field (surface coils), a
  faint flow ghost along the phase-encoding direction and Rician noise at
  clinical signal-to-noise ratios.

Every default of :class:`TestbedSpec` is tied to the range of the real data in
``docs/datasets.md``. Labels: 0 background, 1 RV, 2 myocardium, 3 LV (ACDC).
Every patient draws from its own stream ``default_rng([seed, index])``, so a
patient does not depend on the cohort size; the same seed gives the same files.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from scipy import ndimage

from iac.data.phantom import _orientation, _smooth_field, write_acdc_patient

# Bumped whenever the test bed's output changes (part of the data fingerprint).
TESTBED_VERSION = 1

Range = tuple[float, float]


@dataclass(frozen=True)
class GroupSpec:
    """Anatomy ranges of one ACDC pathology group (end-diastole unless said; lengths in mm)."""

    name: str  # ACDC group name, written to Info.cfg
    lv_radius: Range  # LV cavity radius at the base (half the end-diastolic diameter)
    wall: Range  # LV myocardial thickness
    es_cavity: Range  # ES / ED LV cavity radius (EF ~ 1 - ratio^2 x longitudinal shortening)
    rv_scale: Range  # RV half-span / LV epicardial radius
    es_rv: Range  # ES / ED RV size
    base_descent: Range  # base moving towards the apex at ES (mitral annular excursion)
    infarct: Range = (0.0, 0.0)  # MINF: wall fraction lost in the infarcted sector (0 = none)


# ACDC's groups: NOR normal; MINF EF < 40 % with regional akinesia; DCM LV EDV > 100 mL/m2
# and EF < 40 %; HCM EF > 55 % and wall > 15 mm in places; RV: RV EDV > 110 mL/m2 or RV EF < 40 %.
ACDC_GROUPS: tuple[GroupSpec, ...] = (
    GroupSpec("NOR", (24.0, 28.0), (7.0, 10.0), (0.6, 0.7), (1.1, 1.4), (0.6, 0.72), (10.0, 15.0)),
    GroupSpec("MINF", (25.0, 31.0), (6.0, 9.0), (0.8, 0.9), (1.1, 1.4), (0.65, 0.8), (5.0, 9.0), (0.4, 0.65)),
    GroupSpec("DCM", (29.0, 36.0), (5.0, 8.0), (0.84, 0.94), (1.0, 1.3), (0.7, 0.85), (4.0, 8.0)),
    GroupSpec("HCM", (18.0, 23.0), (13.0, 19.0), (0.46, 0.62), (1.0, 1.3), (0.55, 0.7), (9.0, 14.0)),
    GroupSpec("RV", (23.0, 28.0), (7.0, 10.0), (0.6, 0.72), (1.5, 1.9), (0.78, 0.92), (8.0, 13.0)),
)


@dataclass(frozen=True)
class TestbedSpec:
    """Anatomy and acquisition ranges of the test bed (each drawn per patient unless said).

    Lengths in mm unless said. ``reference_size`` fixes the field of view: a
    patient's in-plane spacing is drawn from ``spacing_xy`` for a matrix of
    ``reference_size`` pixels and scaled by ``reference_size / size`` for other
    matrices, so a smaller matrix is the same anatomy at a coarser resolution.
    """

    __test__ = False  # not a pytest class despite the name

    groups: tuple[GroupSpec, ...] = ACDC_GROUPS  # pathology groups, drawn with equal probability
    reference_size: int = 80  # matrix side at which spacing_xy holds (FOV ~ 110-134 mm: a heart crop)
    spacing_xy: Range = (1.37, 1.68)  # in-plane spacing in mm (ACDC: 1.37-1.68 mm)
    spacing_z: Range = (5.0, 10.0)  # slice spacing in mm (ACDC: 5-10 mm, thickness 5-8 mm)
    thickness: Range = (5.0, 8.0)  # slice thickness in mm (never more than the spacing)
    long_axis: Range = (75.0, 100.0)  # base-to-apex coverage of the stack in mm
    slices: tuple[int, int] = (6, 16)  # slices per stack, clipped to this (ACDC: 6-18 typical)
    n_frames: tuple[int, int] = (28, 40)  # frames of the cine sequence (ACDC: 28-40)
    es_phase: Range = (0.3, 0.42)  # ES frame / frames in the cycle
    center_jitter: float = 6.0  # heart centre offset from the crop centre (std, mm)
    slice_shift: float = 1.5  # breath-hold misregistration between slices and frames (std, mm)
    ellipticity: Range = (0.88, 1.14)  # axis ratio of the LV cross-section
    harmonics: float = 0.04  # std of the 2nd/3rd angular harmonics of the LV contours
    apex_end: Range = (1.0, 1.1)  # where the epicardium closes (fraction of the long axis)
    cavity_end: Range = (0.82, 0.95)  # where the LV cavity closes
    rv_end: Range = (0.6, 0.85)  # where the RV closes
    rv_depth: Range = (0.45, 0.7)  # RV radial half-axis / its half-span
    rv_wall: Range = (2.5, 4.0)  # RV free-wall thickness (labelled background, as in ACDC)
    rv_trabeculation: float = 0.05  # amplitude of the RV endocardium's 5th-9th angular harmonics
    trabeculae: tuple[int, int] = (6, 12)  # LV trabeculae and papillary strands (labelled LV)
    trabecula_length: Range = (2.0, 6.0)  # their radial length from the endocardium
    trabecula_width: Range = (1.0, 2.5)  # their width
    lv_blood: Range = (0.8, 1.0)  # LV blood signal (bSSFP cine: bright blood)
    rv_blood_ratio: Range = (0.8, 0.97)  # RV / LV blood signal (slower inflow)
    myo: Range = (0.22, 0.38)  # myocardium signal
    fat: Range = (0.6, 0.85)  # epicardial and pericardial fat (bright in bSSFP)
    liver: Range = (0.28, 0.42)  # liver and chest wall (close to myocardium)
    blood_texture: float = 0.07  # relative amplitude of slow-flow blood texture
    blur_xy: Range = (0.35, 0.7)  # point-spread blur std in-plane (pixels)
    bias: float = 0.22  # std of the bias-field polynomial coefficients (coil inhomogeneity)
    ghost: Range = (0.0, 0.06)  # flow-ghost amplitude (share of the blood signal)
    noise: Range = (0.03, 0.09)  # Rician noise std / LV blood (blood SNR ~ 11-33)
    supersample: int = 4  # in-plane sub-pixels per side for partial volume (not a random draw)
    slab_samples: int = 3  # depths through the slice thickness for partial volume (not a random draw)
    scale: float = 1000.0  # stored intensity = model intensity x scale (int16 files)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "groups":
                if not value or not all(isinstance(g, GroupSpec) for g in value):
                    raise ValueError("testbed groups must be a non-empty tuple of GroupSpec")
                for g in value:
                    for gf in fields(g):
                        gv = getattr(g, gf.name)
                        if gf.name != "name" and not (0 <= gv[0] <= gv[1]):
                            raise ValueError(f"testbed group {g.name} {gf.name} must be a range 0 <= low <= high, got {gv}")
            elif isinstance(value, tuple):
                if len(value) != 2 or not 0 <= value[0] <= value[1]:
                    raise ValueError(f"testbed {f.name} must be a range (low, high) with 0 <= low <= high, got {value}")
            elif not value >= 0:
                raise ValueError(f"testbed {f.name} must be >= 0, got {value}")
        for name in ("reference_size", "supersample", "slab_samples", "scale"):
            if getattr(self, name) <= 0:
                raise ValueError(f"testbed {name} must be > 0, got {getattr(self, name)}")
        if self.slices[0] < 2:
            raise ValueError(f"testbed slices must allow at least 2 slices per stack, got {self.slices}")
        if self.thickness[0] > self.spacing_z[1]:
            raise ValueError(f"testbed thickness {self.thickness} cannot exceed the slice spacing {self.spacing_z}")


def _u(rng: np.random.Generator, bounds: Range) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _taper(t: np.ndarray, end: float) -> np.ndarray:
    """Radius factor closing a structure at long-axis position ``end``; 0 above the base (t < 0)."""
    return np.where(t < 0, 0.0, np.sqrt(np.clip(1.0 - (t / end) ** 2, 0.0, 1.0)))


def _sector(phi: np.ndarray, centre: float, half_width: float) -> np.ndarray:
    """Smooth 0..1 weight of the angular sector ``centre +- half_width`` (raised cosine edges)."""
    d = np.abs(np.angle(np.exp(1j * (phi - centre))))
    edge = 0.35
    return np.clip((half_width + edge - d) / edge, 0.0, 1.0) ** 2


def _draw(rng: np.random.Generator, spec: TestbedSpec, size: int) -> dict:
    """All per-patient scalars, in a fixed order (reordering changes every patient)."""
    g = spec.groups[int(rng.integers(len(spec.groups)))]
    p = {"group": g.name}
    p["sxy"] = _u(rng, spec.spacing_xy) * spec.reference_size / size
    p["sz"] = _u(rng, spec.spacing_z)
    p["thick"] = min(_u(rng, spec.thickness), p["sz"])
    p["L"] = _u(rng, spec.long_axis)
    p["nz"] = int(np.clip(round(p["L"] / p["sz"]) + 1, spec.slices[0], spec.slices[1]))
    p["n_frames"] = int(rng.integers(spec.n_frames[0], spec.n_frames[1] + 1))
    p["es"] = 1 + round(_u(rng, spec.es_phase) * p["n_frames"])
    p["c0"] = rng.normal(0.0, spec.center_jitter, size=2)
    p["angle"] = float(rng.uniform(0.0, 2 * np.pi))
    p["ell"] = _u(rng, spec.ellipticity)
    p["harm"] = rng.normal(0.0, spec.harmonics, size=2)
    p["phase"] = rng.uniform(0.0, 2 * np.pi, size=2)
    p["r_lv"], p["wall"] = _u(rng, g.lv_radius), _u(rng, g.wall)
    p["es_cav"], p["rv_scale"], p["es_rv"] = _u(rng, g.es_cavity), _u(rng, g.rv_scale), _u(rng, g.es_rv)
    p["descent"] = _u(rng, g.base_descent)
    p["infarct"] = _u(rng, g.infarct)
    p["infarct_at"], p["infarct_half"] = float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0.5, 1.0))
    p["t_epi"], p["t_cav"], p["t_rv"] = _u(rng, spec.apex_end), _u(rng, spec.cavity_end), _u(rng, spec.rv_end)
    p["rv_depth"], p["rv_wall"] = _u(rng, spec.rv_depth), _u(rng, spec.rv_wall)
    p["rv_harm"] = rng.normal(0.0, spec.rv_trabeculation, size=5)
    p["rv_phase"] = rng.uniform(0.0, 2 * np.pi, size=5)
    n_trab = int(rng.integers(spec.trabeculae[0], spec.trabeculae[1] + 1))
    p["trab"] = [
        (float(rng.uniform(0, 2 * np.pi)), _u(rng, spec.trabecula_length), _u(rng, spec.trabecula_width))
        for _ in range(n_trab)
    ]
    p["lv_blood"] = _u(rng, spec.lv_blood)
    p["rv_blood"] = p["lv_blood"] * _u(rng, spec.rv_blood_ratio)
    p["myo"], p["fat"], p["liver"] = _u(rng, spec.myo), _u(rng, spec.fat), _u(rng, spec.liver)
    p["blur"] = _u(rng, spec.blur_xy)
    p["bias"] = rng.normal(0.0, spec.bias, size=6)
    p["ghost"] = _u(rng, spec.ghost)
    p["noise"] = _u(rng, spec.noise) * p["lv_blood"]
    p["fat_phase"], p["fat_cut"] = float(rng.uniform(0, 2 * np.pi)), _u(rng, (-0.2, 0.4))
    p["liver_angle"] = p["angle"] + np.pi / 2 + float(rng.uniform(-0.6, 0.6))
    p["lung_angle"] = p["angle"] + float(rng.uniform(-0.5, 0.5))
    return p


def _tissue_fractions(spec: TestbedSpec, p: dict, frame: str, shifts: np.ndarray, size: int):
    """Tissue maps of one frame on the fine grid.

    Returns:
        ``(label, paint)``: ``label`` int (Z, S, N*s, N*s) with S = slab samples
        (0 bg, 1 RV, 2 myo, 3 LV); ``paint`` int (Z, S, N*s, N*s) tissue codes
        (0 background, 1 RV blood, 2 myocardium, 3 LV blood, 4 RV wall,
        5 trabecula, 6 fat, 7 atrium blood).
    """
    s, ns = spec.supersample, spec.slab_samples
    nf = size * s
    # Fine in-plane coordinates in mm from the crop centre, (1, 1, nf, nf).
    f = ((np.arange(nf) + 0.5) / s - 0.5 - (size - 1) / 2) * p["sxy"]
    yy, xx = np.meshgrid(f, f, indexing="ij")
    yy, xx = yy[None, None], xx[None, None]
    # Long-axis position of every slab sample, (Z, S, 1, 1): 0 = base at ED, 1 = apex.
    offsets = (np.arange(ns) + 0.5) / ns - 0.5 if ns > 1 else np.zeros(1)
    z = np.arange(p["nz"])[:, None] * p["sz"] + offsets[None, :] * p["thick"]  # mm below the ED base, (Z, S)
    es = frame == "es"
    # At ES the base descends towards the (nearly fixed) apex: the ventricle shortens.
    descent = p["descent"] if es else 0.0
    t = ((z - descent) / (p["L"] - descent))[:, :, None, None]
    cy = p["c0"][0] + shifts[:, 0].reshape(-1, 1, 1, 1)
    cx = p["c0"][1] + shifts[:, 1].reshape(-1, 1, 1, 1)
    c, si = np.cos(p["angle"]), np.sin(p["angle"])
    u = c * (xx - cx) + si * (yy - cy)  # towards the RV
    v = -si * (xx - cx) + c * (yy - cy)
    phi = np.arctan2(v, u)
    wobble = 1.0 + p["harm"][0] * np.cos(2 * phi + p["phase"][0]) + p["harm"][1] * np.cos(3 * phi + p["phase"][1])
    rho = np.sqrt((u * np.sqrt(p["ell"])) ** 2 + (v / np.sqrt(p["ell"])) ** 2) / wobble
    # LV: angle-dependent wall (infarcted sector thinned), contraction by angle (infarct akinetic).
    inf_w = p["infarct"] * _sector(phi, p["infarct_at"], p["infarct_half"]) if p["infarct"] > 0 else 0.0
    wall = p["wall"] * (1.0 - inf_w)
    ratio = (p["es_cav"] + (1.0 - p["es_cav"]) * (inf_w / max(p["infarct"], 1e-9))) if es else 1.0
    r_cav_ed = p["r_lv"]
    r_cav = r_cav_ed * ratio
    r_epi = np.sqrt(r_cav**2 + (r_cav_ed + wall) ** 2 - r_cav_ed**2)  # myocardial area conserved
    r_epi_t = r_epi * _taper(t, p["t_epi"])
    r_cav_t = np.minimum(r_cav * _taper(t, p["t_cav"]), np.maximum(r_epi_t - 2.0, 0.0))
    epi = rho < r_epi_t
    cavity = rho < r_cav_t
    # Trabeculae: thin strands of myocardial signal reaching into the cavity from the wall.
    trab = np.zeros(epi.shape, dtype=bool)
    for a, length, width in p["trab"]:
        d_ang = np.abs(np.angle(np.exp(1j * (phi - a))))
        trab |= cavity & (rho > r_cav_t - length) & (d_ang * np.maximum(rho, 1e-6) < width / 2)
    # RV: ellipse beside the LV with a trabeculated (irregular) endocardium.
    r_epi0 = r_cav_ed + p["wall"]
    span = r_epi0 * p["rv_scale"] * (p["es_rv"] if es else 1.0) * _taper(t, p["t_rv"])
    depth = span * p["rv_depth"]
    ru = u - 0.85 * r_epi0
    psi = np.arctan2(v, ru)
    rv_wob = 1.0 + sum(p["rv_harm"][k] * np.cos((k + 5) * psi + p["rv_phase"][k]) for k in range(5))
    rv_rho = np.sqrt((ru / np.maximum(depth, 1e-6)) ** 2 + (v / np.maximum(span, 1e-6)) ** 2)
    present = span > 2.0
    rv_cav = (rv_rho * rv_wob < 1.0) & present & ~epi
    rv_outer = (rv_rho < 1.0 + p["rv_wall"] / np.maximum(depth, 1e-6)) & present
    rv_wall = rv_outer & ~rv_cav & ~epi
    # Atrium above the base (t < 0, ES basal slices): blood labelled background.
    atrium = (t < 0) & (rho < r_cav_ed * 0.9)
    fat = (rho < r_epi_t + 2.5) & ~epi & ~rv_outer & (np.cos(2 * phi + p["fat_phase"]) > p["fat_cut"])
    paint = np.zeros(np.broadcast_shapes(epi.shape, rho.shape), dtype=np.uint8)
    for mask, code in ((fat, 6), (atrium, 7), (epi | rv_wall, 2), (rv_wall, 4), (rv_cav, 1), (cavity, 3), (trab, 5)):
        paint[np.broadcast_to(mask, paint.shape)] = code
    label = np.zeros(paint.shape, dtype=np.uint8)
    label[np.broadcast_to(epi, label.shape)] = 2
    label[np.broadcast_to(cavity, label.shape)] = 3
    label[np.broadcast_to(rv_cav, label.shape)] = 1
    return label, paint


def _block_mean(a: np.ndarray, s: int) -> np.ndarray:
    """Mean over s x s in-plane blocks of the last two axes."""
    *lead, h, w = a.shape
    return a.reshape(*lead, h // s, s, w // s, s).mean(axis=(-3, -1))


def _surroundings(rng: np.random.Generator, spec: TestbedSpec, p: dict, nz: int, size: int) -> np.ndarray:
    """Background signal (Z, N, N): textured chest wall, liver and lungs; draws one texture field."""
    n = size
    tex = _smooth_field(rng, (nz, n, n), max(4, n // 8))
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    yy, xx = (yy - (n - 1) / 2) * p["sxy"], (xx - (n - 1) / 2) * p["sxy"]
    bg = 0.12 + 0.25 * tex
    # Liver below-side of the heart, lungs beside it: half-planes at a distance.
    lv_d = np.cos(p["liver_angle"]) * xx + np.sin(p["liver_angle"]) * yy
    bg = np.where(lv_d[None] > 40.0, p["liver"] * (0.9 + 0.2 * tex), bg)
    lu_d = np.cos(p["lung_angle"]) * xx + np.sin(p["lung_angle"]) * yy
    bg = np.where(np.abs(lu_d[None]) > 50.0, 0.04 + 0.04 * tex, bg)
    return bg


def _render(rng, spec: TestbedSpec, p: dict, paint: np.ndarray, bg: np.ndarray, blood_tex: np.ndarray, size: int):
    """The image float32 (Z, N, N): tissue signals averaged over sub-voxels, blur, ghost, bias, Rician noise."""
    s = spec.supersample
    signal = {1: p["rv_blood"], 2: p["myo"], 3: p["lv_blood"], 4: p["myo"], 5: p["myo"], 6: p["fat"], 7: p["lv_blood"]}
    bg_fine = np.repeat(np.repeat(bg, s, axis=1), s, axis=2)[:, None]  # (Z, 1, nf, nf)
    tex_fine = np.repeat(np.repeat(blood_tex, s, axis=1), s, axis=2)[:, None]
    fine = np.broadcast_to(bg_fine, paint.shape).copy()
    for code, value in signal.items():
        m = paint == code
        blood = code in (1, 3, 7)
        fine[m] = (value * np.broadcast_to(tex_fine, paint.shape)[m]) if blood else value
    img = _block_mean(fine.mean(axis=1), s)  # partial volume in-plane and through the slab, (Z, N, N)
    img = ndimage.gaussian_filter(img, sigma=(0.0, p["blur"], p["blur"]), mode="nearest")
    if p["ghost"] > 0:  # flow ghost: a faint copy of the blood shifted along the phase-encoding axis
        blood = _block_mean(np.isin(paint, (1, 3)).mean(axis=1), s) * p["lv_blood"]
        img = img + p["ghost"] * np.roll(blood, size // 3, axis=2)
    n = size
    xn = np.linspace(-1, 1, n)[None, None, :]
    yn = np.linspace(-1, 1, n)[None, :, None]
    zn = np.linspace(-1, 1, p["nz"])[:, None, None]
    b = p["bias"]
    img = img * np.exp(b[0] * xn + b[1] * yn + b[2] * xn * yn + b[3] * xn**2 + b[4] * yn**2 + b[5] * zn)
    real = img + rng.normal(0.0, p["noise"], size=img.shape)
    imag = rng.normal(0.0, p["noise"], size=img.shape)
    return (np.sqrt(real**2 + imag**2) * spec.scale).astype(np.float32)


def _label_vote(label: np.ndarray, s: int) -> np.ndarray:
    """Voxel label uint8 (Z, N, N): the class filling most of the voxel at the slice centre (fine label (Z, nf, nf))."""
    shares = np.stack([_block_mean((label == k).astype(np.float32), s) for k in range(4)])
    return shares.argmax(axis=0).astype(np.uint8)


def synthesize_testbed_patient(index: int, seed: int, size: int, spec: TestbedSpec = TestbedSpec()) -> dict:
    """One test-bed patient: both frames as arrays plus acquisition metadata.

    Args:
        index: patient number (1-based); selects the patient's random stream.
        seed: cohort seed (``phantom_seed``).
        size: in-plane matrix side N in pixels.
        spec: anatomy and acquisition ranges.

    Returns:
        ``{"frames": {frame_no: (image float32 (Z, N, N), label uint8 (Z, N, N))},
        "ed": 1, "es": int, "n_frames": int, "group": str, "spacing": (x, y, z),
        "origin": (3,), "direction": (9,)}``.
    """
    # One stream per patient, in a fixed order: scalars, textures, shifts, ED noise, ES noise, orientation.
    rng = np.random.default_rng([seed, index])
    p = _draw(rng, spec, size)
    nz = p["nz"]
    bg = _surroundings(rng, spec, p, nz, size)
    blood_tex = 1.0 + spec.blood_texture * (2 * _smooth_field(rng, (nz, size, size), max(4, size // 4)) - 1)
    shifts = {fr: rng.normal(0.0, spec.slice_shift, size=(nz, 2)) for fr in ("ed", "es")}
    frames = {}
    centre = spec.slab_samples // 2
    for frame_no, fr in ((1, "ed"), (p["es"], "es")):
        label_f, paint = _tissue_fractions(spec, p, fr, shifts[fr], size)
        image = _render(rng, spec, p, paint, bg, blood_tex, size)
        frames[frame_no] = (image, _label_vote(label_f[:, centre], spec.supersample))
    origin, direction = _orientation(rng)
    return {
        "frames": frames,
        "ed": 1,
        "es": p["es"],
        "n_frames": p["n_frames"],
        "group": p["group"],
        "spacing": (p["sxy"], p["sxy"], p["sz"]),
        "origin": origin,
        "direction": direction,
    }


def write_testbed(
    root: Path, n_patients: int = 34, seed: int = 0, size: int = 64, spec: TestbedSpec = TestbedSpec()
) -> Path:
    """Write the test-bed cohort in the ACDC raw layout (``root/training/patientNNN``).

    Args:
        root: folder playing ACDC's ``database``.
        n_patients: number of patients (numbered from 1).
        seed: cohort seed.
        size: in-plane matrix side in pixels.
        spec: anatomy and acquisition ranges.

    Returns:
        ``root`` (pass it to the ACDC reader).

    Raises:
        ValueError: for a non-positive ``n_patients`` or a matrix under 16 pixels.
    """
    if n_patients < 1:
        raise ValueError(f"testbed n_patients must be >= 1, got {n_patients}")
    if size < 16:
        raise ValueError(f"testbed size must be >= 16 pixels, got {size}")
    root = Path(root)
    for index in range(1, n_patients + 1):
        write_acdc_patient(root, index, synthesize_testbed_patient(index, seed, size, spec))
    return root
