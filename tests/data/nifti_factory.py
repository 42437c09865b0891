"""Tiny NIfTI cohorts in the layouts of the distributed datasets, for tests.

Every writer produces real files that SimpleITK reads back, with small
volumes (default ``(Z, Y, X) = (2, 8, 8)``) so that tests stay fast. Arrays are
given in numpy order ``(Z, Y, X)``; spacing in SimpleITK order ``(x, y, z)``.

Images hold seeded noise; label maps hold one block per requested label value,
so every declared value is present. Cohort writers return the list of case
ids they wrote, in sorted order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import SimpleITK as sitk

SHAPE = (2, 8, 8)  # (Z, Y, X)
SPACING = (1.5, 1.5, 8.0)  # (x, y, z) mm, anisotropic like a cardiac stack


def write_image(
    path: Path,
    array: np.ndarray | None = None,
    *,
    shape: Sequence[int] = SHAPE,
    spacing: Sequence[float] = SPACING,
    seed: int = 0,
    channels: int | None = None,
) -> Path:
    """Write a float32 image.

    Args:
        path: target file (``.nii.gz`` or ``.nii``); parent folders are created.
        array: voxels ``(Z, Y, X)`` or, for a 4-D file, ``(C, Z, Y, X)``; None = seeded noise.
        shape: ``(Z, Y, X)`` of the noise image when ``array`` is None.
        spacing: ``(x, y, z)`` spacing in mm (a fourth value of 1 is added for 4-D files).
        seed: seed of the noise.
        channels: when set (and ``array`` is None), write a 4-D file with this many
            channels on its last axis, as the Medical Segmentation Decathlon does.

    Returns:
        The path written.
    """
    if array is None:
        rng = np.random.default_rng(seed)
        full = tuple(shape) if channels is None else (channels, *shape)
        array = rng.normal(100.0, 20.0, size=full)
    array = np.asarray(array, dtype=np.float32)
    img = sitk.GetImageFromArray(array, isVector=False)
    sp = tuple(float(s) for s in spacing)
    img.SetSpacing(sp + (1.0,) * (array.ndim - len(sp)))
    return _write(img, path)


def label_array(values: Iterable[int], shape: Sequence[int] = SHAPE) -> np.ndarray:
    """A uint8 label map ``(Z, Y, X)`` holding one small block per value (0 fills the rest)."""
    lab = np.zeros(tuple(shape), dtype=np.uint8)
    flat = lab.reshape(-1)
    nonzero = [int(v) for v in values if int(v) != 0]
    # Blocks of 3 voxels, one after another in raster order.
    for i, v in enumerate(nonzero):
        flat[1 + 3 * i : 4 + 3 * i] = v
    return lab


def write_label(
    path: Path,
    values: Iterable[int] = (1,),
    *,
    shape: Sequence[int] = SHAPE,
    spacing: Sequence[float] = SPACING,
    array: np.ndarray | None = None,
) -> Path:
    """Write a uint8 label map with one block per value in ``values`` (or ``array`` as given)."""
    arr = label_array(values, shape) if array is None else np.asarray(array, dtype=np.uint8)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(tuple(float(s) for s in spacing))
    return _write(img, path)


def write_json(path: Path, obj: dict) -> Path:
    """Write ``obj`` as JSON (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))
    return path


def _write(img: sitk.Image, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


# --------------------------------------------------------------------------- ACDC


def make_acdc(
    root: Path,
    patients: Sequence[int] = (1, 2),
    *,
    subset: str = "training",
    frames: tuple[int, int] = (1, 8),
    shape: Sequence[int] = SHAPE,
) -> list[str]:
    """ACDC: ``root/<subset>/patientNNN/{Info.cfg, patientNNN_frameXX[_gt].nii.gz}``.

    ``root`` plays the ``database`` folder. Labels 0 background, 1 RV, 2 myo, 3 LV.
    """
    ids = []
    for p in patients:
        pid = f"patient{p:03d}"
        folder = Path(root) / subset / pid
        folder.mkdir(parents=True, exist_ok=True)
        ed, es = frames
        (folder / "Info.cfg").write_text(
            f"ED: {ed}\nES: {es}\nGroup: NOR\nHeight: 170.0\nNbFrame: 30\nWeight: 70.0\n"
        )
        for fr in (ed, es):
            stem = f"{pid}_frame{fr:02d}"
            write_image(folder / f"{stem}.nii.gz", shape=shape, seed=p * 100 + fr)
            write_label(folder / f"{stem}_gt.nii.gz", (1, 2, 3), shape=shape)
        ids.append(pid)
    return sorted(ids)


# --------------------------------------------------------------------------- BraTS

BRATS_LEGACY_SUFFIXES = ("flair", "t1", "t1ce", "t2")
BRATS_2023_SUFFIXES = ("t2f", "t1n", "t1c", "t2w")


def brats_case_name(version: str, index: int) -> str:
    """Case folder name of a BraTS release (``2020``, ``2021`` or ``2023``)."""
    if version == "2020":
        return f"BraTS20_Training_{index:03d}"
    if version == "2021":
        return f"BraTS2021_{index:05d}"
    if version == "2023":
        return f"BraTS-GLI-{index:05d}-000"
    raise ValueError(f"unknown BraTS version {version!r}; expected 2020, 2021 or 2023")


def make_brats(
    root: Path,
    version: str = "2020",
    cases: Sequence[int] = (1, 2),
    *,
    shape: Sequence[int] = SHAPE,
    ext: str = ".nii.gz",
    with_seg: bool = True,
) -> list[str]:
    """BraTS: one folder per case with four modality files and ``seg``.

    2020/2021 use ``<case>_{flair,t1,t1ce,t2,seg}`` and labels 0, 1, 2, 4;
    2023 uses ``<case>-{t1n,t1c,t2w,t2f,seg}`` and labels 0, 1, 2, 3.
    """
    legacy = version != "2023"
    sep = "_" if legacy else "-"
    suffixes = BRATS_LEGACY_SUFFIXES if legacy else BRATS_2023_SUFFIXES
    ids = []
    for i in cases:
        name = brats_case_name(version, i)
        folder = Path(root) / name
        for k, suf in enumerate(suffixes):
            write_image(folder / f"{name}{sep}{suf}{ext}", shape=shape, seed=i * 10 + k)
        if with_seg:
            values = (1, 2, 4) if legacy else (1, 2, 3)
            write_label(folder / f"{name}{sep}seg{ext}", values, shape=shape)
        ids.append(name)
    return sorted(ids)


# --------------------------------------------------------------------------- KiTS


def make_kits(
    root: Path,
    cases: Sequence[int] = (0, 1),
    *,
    version: str = "19",
    instances: bool = False,
    shape: Sequence[int] = SHAPE,
    with_seg: bool = True,
) -> list[str]:
    """KiTS19/23: ``root/case_XXXXX/{imaging,segmentation}.nii.gz``.

    Labels KiTS19: 1 kidney, 2 tumour; KiTS23 adds 3 cyst. With ``instances`` a
    KiTS23-style ``instances/`` subfolder with one annotation file is added.
    """
    values = (1, 2) if version == "19" else (1, 2, 3)
    ids = []
    for i in cases:
        name = f"case_{i:05d}"
        folder = Path(root) / name
        write_image(folder / "imaging.nii.gz", shape=shape, seed=i)
        if with_seg:
            write_label(folder / "segmentation.nii.gz", values, shape=shape)
        if instances:
            write_label(folder / "instances" / "kidney_instance-1_annotation-1.nii.gz", (1,), shape=shape)
        ids.append(name)
    return sorted(ids)


# --------------------------------------------------------------------------- AMOS22

AMOS_LABELS = {
    "0": "background",
    "1": "spleen",
    "2": "right kidney",
    "3": "left kidney",
    "4": "gall bladder",
    "5": "esophagus",
    "6": "liver",
    "7": "stomach",
    "8": "aorta",
    "9": "postcava",
    "10": "pancreas",
    "11": "right adrenal gland",
    "12": "left adrenal gland",
    "13": "duodenum",
    "14": "bladder",
    "15": "prostate/uterus",
}


def make_amos(
    root: Path,
    train_ids: Sequence[int] = (1, 501),
    val_ids: Sequence[int] = (),
    *,
    shape: Sequence[int] = SHAPE,
    labels: dict[str, str] | None = None,
) -> list[str]:
    """AMOS22: ``imagesTr/amos_XXXX.nii.gz``, ``labelsTr/`` (+ ``imagesVa``/``labelsVa``) and ``dataset.json``.

    Ids up to 500 are CT, above 500 MRI, as in the release.
    """
    root = Path(root)
    labels = AMOS_LABELS if labels is None else labels
    entries: dict[str, list[dict[str, str]]] = {"training": [], "validation": []}
    ids = []
    for subset, id_list, key in (("Tr", train_ids, "training"), ("Va", val_ids, "validation")):
        for i in id_list:
            name = f"amos_{i:04d}"
            write_image(root / f"images{subset}" / f"{name}.nii.gz", shape=shape, seed=i)
            write_label(root / f"labels{subset}" / f"{name}.nii.gz", (1, 6, 15), shape=shape)
            entries[key].append(
                {"image": f"./images{subset}/{name}.nii.gz", "label": f"./labels{subset}/{name}.nii.gz"}
            )
            ids.append(name)
    write_json(
        root / "dataset.json",
        {
            "name": "AMOS",
            "tensorImageSize": "3D",
            "modality": {"0": "CT"},
            "labels": labels,
            "numTraining": len(train_ids),
            "numValidation": len(val_ids),
            **entries,
        },
    )
    return sorted(ids)


# --------------------------------------------------------------------------- nnU-Net raw / MSD


def make_nnunet(
    root: Path,
    cases: Sequence[str] = ("case_001", "case_002"),
    *,
    channel_names: dict[str, str] | None = None,
    labels: dict[str, int | list[int]] | None = None,
    file_ending: str = ".nii.gz",
    shape: Sequence[int] = SHAPE,
) -> list[str]:
    """nnU-Net v2 raw: ``imagesTr/<case>_XXXX<ending>``, ``labelsTr/<case><ending>``, ``dataset.json``."""
    root = Path(root)
    channel_names = {"0": "T2", "1": "ADC"} if channel_names is None else channel_names
    labels = {"background": 0, "PZ": 1, "TZ": 2} if labels is None else labels
    values = sorted({v for val in labels.values() for v in (val if isinstance(val, list) else [val])})
    for n, case in enumerate(cases):
        for ch in channel_names:
            write_image(root / "imagesTr" / f"{case}_{int(ch):04d}{file_ending}", shape=shape, seed=n * 10 + int(ch))
        write_label(root / "labelsTr" / f"{case}{file_ending}", values, shape=shape)
    write_json(
        root / "dataset.json",
        {
            "channel_names": channel_names,
            "labels": labels,
            "numTraining": len(cases),
            "file_ending": file_ending,
        },
    )
    return sorted(cases)


def make_msd(
    root: Path,
    cases: Sequence[str] = ("BRATS_001", "BRATS_002"),
    *,
    modality: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    shape: Sequence[int] = SHAPE,
    apple_double: bool = True,
) -> list[str]:
    """Medical Segmentation Decathlon: ``imagesTr/<case>.nii.gz`` (4-D when several modalities).

    ``dataset.json`` carries ``modality`` ``{"0": "FLAIR", ...}`` and ``labels``
    int -> name (string keys). With ``apple_double`` a macOS ``._<case>.nii.gz``
    resource file is dropped next to each image, as in the distributed archives.
    """
    root = Path(root)
    modality = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"} if modality is None else modality
    labels = (
        {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}
        if labels is None
        else labels
    )
    n_ch = len(modality)
    for n, case in enumerate(cases):
        img = root / "imagesTr" / f"{case}.nii.gz"
        write_image(img, shape=shape, seed=n, channels=n_ch if n_ch > 1 else None)
        write_label(root / "labelsTr" / f"{case}.nii.gz", [int(k) for k in labels], shape=shape)
        if apple_double:
            (img.parent / f"._{img.name}").write_bytes(b"\x00\x05\x16\x07")
            (root / "labelsTr" / f"._{case}.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    write_json(
        root / "dataset.json",
        {
            "name": "BRATS",
            "tensorImageSize": "4D" if n_ch > 1 else "3D",
            "modality": modality,
            "labels": labels,
            "numTraining": len(cases),
            "training": [
                {"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases
            ],
        },
    )
    return sorted(cases)
