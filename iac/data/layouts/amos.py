"""AMOS22: abdominal multi-organ CT and MRI.

Layout as distributed (``amos22/``)::

    dataset.json            labels {"0": "background", "1": "spleen", ..., "15": "prostate/uterus"}
    imagesTr/amos_0001.nii.gz   labelsTr/amos_0001.nii.gz
    imagesVa/amos_0008.nii.gz   labelsVa/amos_0008.nii.gz   (used when labelsVa/ exists)
    imagesTs/                   (no labels; ignored)

Scans with ids up to 500 are CT, above 500 MRI. ``amos_modality`` picks
``ct`` (default), ``mri`` or ``all``; a mixed cohort is normalised per volume
(z-score), as CT Hounsfield statistics do not apply to MRI.
"""

from __future__ import annotations

import re
from pathlib import Path

from iac.data.layouts.base import CaseSource, DataError, Discovery, LayoutInfo, register_layout
from iac.data.layouts.nnunet import image_files, parse_labels, read_json, require_dir, strip_ending

CT_MAX_ID = 500  # AMOS22: ids 1..500 are CT, 501.. are MRI
_MODES = {"ct": ("CT", "CT"), "mri": ("MR", "MR"), "all": ("MR", "CT_or_MR")}  # mode -> (modality, channel)
_AMOS_ID = re.compile(r"^amos_(\d+)$")


def _wanted(case_id: int, mode: str) -> bool:
    if mode == "ct":
        return case_id <= CT_MAX_ID
    if mode == "mri":
        return case_id > CT_MAX_ID
    return True


def _mode(options: dict) -> str:
    """The ``amos_modality`` option in lower case (default ``ct``), checked against :data:`_MODES`."""
    mode = str(options.get("amos_modality") or "ct").lower()
    if mode not in _MODES:
        raise DataError(f"amos_modality={mode!r} is not valid; expected one of {', '.join(_MODES)}")
    return mode


def _label_names(source: Path) -> dict[int, str]:
    """Label value -> name from ``source/dataset.json`` (which must exist)."""
    meta_path = source / "dataset.json"
    if not meta_path.is_file():
        raise DataError(
            f"{source}: no dataset.json; expected the AMOS22 folder with dataset.json, imagesTr/, labelsTr/"
        )
    label_names, _ = parse_labels(read_json(meta_path).get("labels"), meta_path)
    return label_names


def _subsets(source: Path) -> list[str]:
    """Labelled subsets to read: ``Tr`` (required) and ``Va`` when both its folders exist."""
    require_dir(source / "imagesTr", "AMOS22 training images next to dataset.json")
    require_dir(source / "labelsTr", "AMOS22 training labels next to dataset.json")
    return ["Tr"] + (["Va"] if (source / "imagesVa").is_dir() and (source / "labelsVa").is_dir() else [])


def _paired_files(img_dir: Path, lab_dir: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Image and label files of one subset by case id, checked to be named ``amos_NNNN`` and to pair up.

    Returns:
        ``(images, labels)``, both case id -> file, with the same keys.
    """
    images = {strip_ending(p.name): p for p in image_files(img_dir)}
    labels = {strip_ending(p.name): p for p in image_files(lab_dir)}
    for stem, path in {**labels, **images}.items():
        if not _AMOS_ID.match(stem):
            raise DataError(f"{path}: unexpected file name; expected amos_NNNN.nii.gz")
    unlabelled = sorted(set(images) - set(labels))
    if unlabelled:
        path = images[unlabelled[0]]
        raise DataError(f"{path}: image without label; expected {lab_dir / path.name}")
    orphans = sorted(set(labels) - set(images))
    if orphans:
        path = labels[orphans[0]]
        raise DataError(f"{path}: label without image; expected {img_dir / path.name}")
    return images, labels


def _subset_cases(source: Path, sub: str, mode: str, seen: dict[str, Path]) -> list[CaseSource]:
    """Cases of the selected modality in ``images<sub>``/``labels<sub>``, in file order.

    Args:
        source: the AMOS22 folder.
        sub: subset suffix, ``Tr`` or ``Va``.
        mode: ``ct``, ``mri`` or ``all``.
        seen: case id -> images folder of every case met so far (all modalities); updated here,
            so that an id present in two subsets is refused.
    """
    img_dir, lab_dir = source / f"images{sub}", source / f"labels{sub}"
    images, labels = _paired_files(img_dir, lab_dir)
    cases: list[CaseSource] = []
    for stem in images:
        if stem in seen:
            raise DataError(f"{images[stem]}: case {stem} also found in {seen[stem]}; expected each id once")
        seen[stem] = img_dir
        if _wanted(int(_AMOS_ID.match(stem)[1]), mode):
            cases.append(
                CaseSource(case_id=stem, patient=stem, frame=None, images=(images[stem],), label=labels[stem])
            )
    return cases


@register_layout("amos")
def discover(source: Path, options: dict) -> Discovery:
    """Scan an AMOS22 folder.

    Args:
        source: the ``amos22`` folder holding ``dataset.json``, ``imagesTr/`` and ``labelsTr/``.
        options: ``amos_modality`` (``ct``, ``mri`` or ``all``; default ``ct``).

    Returns:
        One case per labelled scan of the selected modality, sorted by case id.

    Raises:
        DataError: missing ``dataset.json``/folders, a file not named ``amos_NNNN``,
            an image without label (or the reverse), or no scan of the selected modality.
    """
    source = require_dir(Path(source), "the AMOS22 folder (dataset.json, imagesTr/, labelsTr/)")
    mode = _mode(options)
    label_names = _label_names(source)
    subsets = _subsets(source)
    cases: list[CaseSource] = []
    seen: dict[str, Path] = {}  # case id -> images folder it came from
    for sub in subsets:
        cases += _subset_cases(source, sub, mode, seen)
    if not cases:
        rule = {"ct": f"ids <= {CT_MAX_ID}", "mri": f"ids > {CT_MAX_ID}", "all": "any id"}[mode]
        raise DataError(
            f"{source}: no labelled {mode.upper()} scans ({rule}) in "
            f"{', '.join('images' + s for s in subsets)}; expected amos_NNNN.nii.gz files"
        )
    modality, channel = _MODES[mode]
    info = LayoutInfo(
        name="amos",
        modality=modality,
        channel_names=(channel,),
        label_names=label_names,
        label_map={},
        regions={},
    )
    return Discovery(info=info, cases=tuple(sorted(cases, key=lambda c: c.case_id)))
