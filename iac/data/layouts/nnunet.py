"""nnU-Net raw and Medical Segmentation Decathlon (MSD) folders.

Both keep ``imagesTr/``, ``labelsTr/`` and a ``dataset.json``; they differ in
how channels are stored and how ``dataset.json`` spells channels and labels:

- nnU-Net v2 raw: one file per channel, ``imagesTr/<case>_0000.nii.gz``,
  ``_0001``, ...; ``dataset.json`` has ``channel_names`` ``{"0": "T2", ...}``,
  ``labels`` name -> int (or a list of ints for a region) and ``file_ending``.
- MSD (and nnU-Net v1 tasks): ``dataset.json`` has ``modality``
  ``{"0": "FLAIR", ...}`` and ``labels`` int -> name with string keys; MSD
  keeps multi-modal cases as one 4-D file ``imagesTr/<case>.nii.gz`` whose
  last axis holds the channels (v1 tasks split them with ``_0000`` suffixes).

The cases are those of ``labelsTr/``; each image file must belong to one of
them. macOS ``._*`` resource files shipped in the MSD archives are ignored.
The modality is ``CT`` when every channel is named ``CT`` (nnU-Net applies
its CT normalisation by that name), ``MR`` otherwise.

The helpers here (file listing, ``dataset.json`` reading, header peeking,
label parsing, channel selection) are shared with the other layouts that
follow nnU-Net conventions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import SimpleITK as sitk

from iac.data.layouts.base import CaseSource, DataError, Discovery, LayoutInfo, register_layout

NIFTI_ENDINGS = (".nii.gz", ".nii")
# nnU-Net channel suffix: ``<case>_XXXX`` with exactly four digits.
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


# --------------------------------------------------------------------------- shared helpers


def require_dir(path: Path, expected: str) -> Path:
    """Return ``path`` if it is a folder, else raise a :class:`DataError` saying what was expected."""
    path = Path(path)
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a folder"
        raise DataError(f"{path}: {what}; expected {expected}")
    return path


def image_files(folder: Path, endings: Sequence[str] = NIFTI_ENDINGS) -> list[Path]:
    """Image files in ``folder`` with one of ``endings``, sorted, without hidden or macOS ``._*`` files."""
    return sorted(
        p
        for p in Path(folder).iterdir()
        if p.is_file() and not p.name.startswith(".") and strip_ending(p.name, endings) is not None
    )


def strip_ending(name: str, endings: Sequence[str] = NIFTI_ENDINGS) -> str | None:
    """``name`` without its file ending, or None when it has none of ``endings`` (case-insensitive)."""
    low = name.lower()
    for end in sorted(endings, key=len, reverse=True):  # ".nii.gz" before ".nii"
        if low.endswith(end.lower()) and len(name) > len(end):
            return name[: -len(end)]
    return None


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, raising a :class:`DataError` that names the file when it is not one."""
    try:
        obj = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found; expected a dataset.json") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not readable as JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj


def header_size(path: Path) -> tuple[int, ...]:
    """Image size ``(x, y, z[, c])`` from the file header only (voxels are not decoded)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(f"{path}: image header not readable ({str(exc).strip().splitlines()[-1]})") from exc
    return tuple(int(s) for s in reader.GetSize())


def parse_labels(raw: Any, where: Path) -> tuple[dict[int, str], dict[str, tuple[int, ...]]]:
    """Label names and regions from a ``dataset.json`` ``labels`` entry.

    Accepts the MSD spelling (``{"0": "background", "1": "edema"}``) and the
    nnU-Net v2 one (``{"background": 0, "edema": 1}``, where a list value
    declares a region such as ``"whole tumor": [1, 2, 3]``). Label values that
    only appear in regions are named after their single-value region, or
    ``label_<v>``.

    Returns:
        ``({value: name}, {region name: values})``; value 0 is always present.
    """
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{where}: expected a non-empty 'labels' object in dataset.json")
    names: dict[int, str] = {}
    regions: dict[str, tuple[int, ...]] = {}
    if all(isinstance(v, str) for v in raw.values()):  # MSD: "int" -> name
        for key, name in raw.items():
            try:
                names[int(key)] = name
            except ValueError as exc:
                raise DataError(
                    f"{where}: label key {key!r} is not an integer; expected labels as "
                    '{"0": "background", "1": "<name>"} (MSD) or {"background": 0} (nnU-Net v2)'
                ) from exc
    else:  # nnU-Net v2: name -> int | [int, ...]
        single_regions: dict[int, str] = {}
        for name, val in raw.items():
            if isinstance(val, bool) or not isinstance(val, (int, list)):
                raise DataError(f"{where}: label {name!r} has value {val!r}; expected an integer or a list of integers")
            if isinstance(val, int):
                names[val] = name
                continue
            if not val or not all(isinstance(v, int) and not isinstance(v, bool) for v in val):
                raise DataError(f"{where}: region {name!r} = {val!r}; expected a non-empty list of integers")
            regions[name] = tuple(sorted(set(val)))
            if len(val) == 1:
                single_regions.setdefault(val[0], name)
        for vals in regions.values():
            for v in vals:
                names.setdefault(v, single_regions.get(v, f"label_{v}"))
    if any(v < 0 or v > 255 for v in names):
        raise DataError(f"{where}: label values {sorted(names)} must lie in 0..255")
    names.setdefault(0, "background")
    return dict(sorted(names.items())), regions


def select_channels(
    available: Sequence[str], requested: Sequence[str] | None, where: Path, aliases: dict[str, str] | None = None
) -> list[int]:
    """Indices of the ``requested`` channels (by name, case-insensitive) within ``available``.

    Args:
        available: channel names of the dataset, in file order.
        requested: names to keep, in the order wanted; None keeps all.
        where: the folder named in errors.
        aliases: extra accepted spellings, alias -> name in ``available`` (lower case).

    Raises:
        DataError: unknown or repeated names, listing the valid ones.
    """
    if requested is None:
        return list(range(len(available)))
    if isinstance(requested, str):
        requested = [s for s in requested.split(",") if s.strip()]
    lower = [a.lower() for a in available]
    aliases = aliases or {}
    picked: list[int] = []
    for name in requested:
        key = aliases.get(name.strip().lower(), name.strip().lower())
        if key not in lower:
            valid = ", ".join(available)
            raise DataError(f"{where}: unknown modality {name!r}; valid names are {valid}")
        idx = lower.index(key)
        if idx in picked:
            raise DataError(f"{where}: modality {name!r} requested twice")
        picked.append(idx)
    if not picked:
        raise DataError(f"{where}: 'modalities' selects no channel; valid names are {', '.join(available)}")
    return picked


def modality_of(channel_names: Sequence[str]) -> str:
    """``CT`` when every channel is named CT (case-insensitive), else ``MR``."""
    return "CT" if channel_names and all(c.strip().upper() == "CT" for c in channel_names) else "MR"


def slug(name: str, default: str) -> str:
    """Lower-case dataset name for registry names: letters, digits, ``_`` and ``-`` only."""
    s = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_")
    return s or default


# --------------------------------------------------------------------------- the layout


def _channel_names(meta: dict[str, Any], where: Path) -> list[str]:
    raw = meta.get("channel_names", meta.get("modality"))
    if not isinstance(raw, dict) or not raw:
        raise DataError(
            f"{where}: expected 'channel_names' (nnU-Net v2) or 'modality' (MSD) as "
            '{"0": "<name>", ...} in dataset.json'
        )
    try:
        keyed = {int(k): str(v) for k, v in raw.items()}
    except ValueError as exc:
        raise DataError(f"{where}: channel keys {list(raw)} must be integers 0..C-1") from exc
    if sorted(keyed) != list(range(len(keyed))):
        raise DataError(f"{where}: channel keys {sorted(keyed)} must be 0..{len(keyed) - 1}")
    return [keyed[i] for i in range(len(keyed))]


# A case as found on disk: (case id, image files in channel order, channels on the last axis of one 4-D file).
_Case = tuple[str, tuple[Path, ...], bool]


def _read_dataset_json(source: Path) -> tuple[Path, dict[str, Any]]:
    """Path and contents of ``source/dataset.json``.

    Raises:
        DataError: the file is missing or not a JSON object.
    """
    meta_path = source / "dataset.json"
    if not meta_path.is_file():
        raise DataError(
            f"{source}: no dataset.json; expected an nnU-Net raw or Medical Segmentation Decathlon "
            "folder with dataset.json, imagesTr/ and labelsTr/"
        )
    return meta_path, read_json(meta_path)


def _label_files(labels_dir: Path, endings: Sequence[str]) -> dict[str, Path]:
    """Label files of ``labels_dir`` by case id (the name without its ending).

    Raises:
        DataError: the folder holds no label file.
    """
    labels = {strip_ending(p.name, endings): p for p in image_files(labels_dir, endings)}
    if not labels:
        raise DataError(f"{labels_dir}: no label files ending in {' or '.join(endings)}")
    return labels


def _sort_images(
    images_dir: Path, labels_dir: Path, labels: dict[str, Path], endings: Sequence[str]
) -> tuple[dict[str, Path], dict[str, dict[int, Path]]]:
    """Assign every image file of ``images_dir`` to the case of its label.

    Returns:
        ``(whole, split)``: case -> its single (3-D or 4-D) file, and case ->
        {channel index: file} for ``<case>_XXXX`` per-channel files.

    Raises:
        DataError: an image whose name matches no label file.
    """
    whole: dict[str, Path] = {}
    split: dict[str, dict[int, Path]] = {}
    for img in image_files(images_dir, endings):
        stem = strip_ending(img.name, endings)
        m = _CHANNEL_SUFFIX.match(stem)
        # The whole name wins: a case may itself end in _XXXX.
        if stem in labels:
            whole[stem] = img
        elif m and m["case"] in labels:
            split.setdefault(m["case"], {})[int(m["channel"])] = img
        else:
            raise DataError(
                f"{img}: image without label; expected {labels_dir / (stem + endings[0])}"
                + (f" or {labels_dir / (m['case'] + endings[0])}" if m else "")
            )
    return whole, split


def _check_conventions(
    images_dir: Path,
    labels: dict[str, Path],
    whole: dict[str, Path],
    split: dict[str, dict[int, Path]],
    endings: Sequence[str],
) -> None:
    """Refuse a folder mixing whole-case and per-channel files, or a label without image."""
    if whole and split:
        a, b = sorted(whole)[0], sorted(split)[0]
        raise DataError(
            f"{images_dir}: mixes whole-case files ({whole[a].name}) and per-channel files "
            f"({split[b][min(split[b])].name}); expected one convention for all cases"
        )
    missing = sorted(set(labels) - set(whole) - set(split))
    if missing:
        raise DataError(
            f"{labels[missing[0]]}: label without image; expected "
            f"{images_dir / (missing[0] + ('_0000' if split else '') + endings[0])}"
        )


def _channel_files_case(case: str, found: dict[int, Path], n_ch: int, images_dir: Path) -> _Case:
    """A case stored as one file per channel; every channel of ``dataset.json`` must be there, no more."""
    if sorted(found) != list(range(n_ch)):
        want = ", ".join(f"{case}_{i:04d}" for i in range(n_ch))
        have = ", ".join(f"{case}_{i:04d}" for i in sorted(found))
        raise DataError(
            f"{images_dir}: case {case!r} has channel files {have}; expected {want} "
            f"({n_ch} channels in dataset.json)"
        )
    return case, tuple(found[i] for i in range(n_ch)), False


def _whole_file_case(case: str, img: Path, n_ch: int, meta_path: Path) -> _Case:
    """A case stored as one file: 4-D with ``n_ch`` channels on its last axis, or 3-D when ``n_ch`` is 1.

    Only the header is read, to get the size ``(x, y, z[, c])``.
    """
    size = header_size(img)
    if len(size) == 4:
        if size[3] != n_ch:
            raise DataError(f"{img}: 4-D image with {size[3]} channels; expected {n_ch} as listed in {meta_path}")
        return case, (img,), True
    if n_ch != 1:
        raise DataError(
            f"{img}: {len(size)}-D image; expected a 4-D file with {n_ch} channels "
            f"or per-channel files {case}_0000..{case}_{n_ch - 1:04d}"
        )
    return case, (img,), False


def _select_case_channels(
    cases: list[_Case], channels: list[str], requested: Any, source: Path
) -> tuple[list[_Case], list[int]]:
    """Keep the ``requested`` channels of every case.

    Returns:
        The cases with their files narrowed to the picked channels, and the
        picked channel indices.

    Raises:
        DataError: unknown names, or a strict subset asked of 4-D files (their
            channels cannot be dropped file by file).
    """
    picked = select_channels(channels, requested, source)
    if picked != list(range(len(channels))):
        if any(four_d for _, _, four_d in cases):
            raise DataError(
                f"{source}: channel selection {requested!r} is not available for 4-D "
                f"images; expected all channels ({', '.join(channels)}) or per-channel files"
            )
        cases = [(c, tuple(files[i] for i in picked), f) for c, files, f in cases]
    return cases, picked


@register_layout("nnunet")
def discover(source: Path, options: dict) -> Discovery:
    """Scan an nnU-Net raw or MSD folder.

    Args:
        source: the dataset folder holding ``dataset.json``, ``imagesTr/`` and ``labelsTr/``
            (e.g. ``Task01_BrainTumour`` or ``Dataset004_Hippocampus``).
        options: ``modalities`` (channel names to keep, or None for all).

    Returns:
        One case per label file of ``labelsTr/``, sorted by case id; the dataset
        name is the folder name in lower case.

    Raises:
        DataError: missing ``dataset.json`` or folders, an image without label (or
            the reverse), missing or extra channel files, a 4-D image whose channel
            count disagrees with ``dataset.json``.
    """
    source = require_dir(
        Path(source), "an nnU-Net raw or Medical Segmentation Decathlon folder (dataset.json, imagesTr/, labelsTr/)"
    )
    meta_path, meta = _read_dataset_json(source)
    channels = _channel_names(meta, meta_path)
    label_names, regions = parse_labels(meta.get("labels"), meta_path)
    ending = meta.get("file_ending")
    endings = (ending,) if isinstance(ending, str) and ending else NIFTI_ENDINGS
    images_dir = require_dir(source / "imagesTr", "a folder of training images next to dataset.json")
    labels_dir = require_dir(source / "labelsTr", "a folder of training labels next to dataset.json")

    labels = _label_files(labels_dir, endings)
    whole, split = _sort_images(images_dir, labels_dir, labels, endings)
    _check_conventions(images_dir, labels, whole, split, endings)
    n_ch = len(channels)
    cases = [
        _channel_files_case(case, split[case], n_ch, images_dir)
        if case in split
        else _whole_file_case(case, whole[case], n_ch, meta_path)
        for case in sorted(labels)
    ]
    cases, picked = _select_case_channels(cases, channels, options.get("modalities"), source)

    names = tuple(channels[i] for i in picked)
    info = LayoutInfo(
        name=slug(source.resolve().name, "nnunet"),
        modality=modality_of(names),
        channel_names=names,
        label_names=label_names,
        label_map={},
        regions=regions,
    )
    return Discovery(
        info=info,
        cases=tuple(
            CaseSource(case_id=c, patient=c, frame=None, images=files, label=labels[c], channel_axis_4d=f)
            for c, files, f in cases
        ),
    )
