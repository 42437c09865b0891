"""BraTS 2020/2021 and 2023: multi-modal brain tumour MRI.

Layout as distributed (the training-data folder holding one folder per case)::

    BraTS20_Training_001/BraTS20_Training_001_{flair,t1,t1ce,t2,seg}.nii(.gz)   2020
    BraTS2021_00000/BraTS2021_00000_{flair,t1,t1ce,t2,seg}.nii.gz               2021
    BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t2f,t1n,t1c,t2w,seg}.nii.gz        2023

The release is recognised from the file names. Channels are always named by
their 2020/2021 names and stacked as flair, t1, t1ce, t2 (2023: t2f -> flair,
t1n -> t1, t1c -> t1ce, t2w -> t2); the ``modalities`` option picks a subset in
the order given, by either spelling.

Labels: 0 background, 1 necrotic / non-enhancing tumour core, 2 peritumoral
edema (2023: surrounding FLAIR hyperintensity), 3 enhancing tumour, stored as
3 in every release (2020/2021 files use 4, mapped 4 -> 3). Regions: whole
tumour {1, 2, 3}, tumour core {1, 3}, enhancing tumour {3}.

A case whose ``seg`` file is named otherwise (BraTS 2020 case 355 ships
``W39_1998.09.19_Segm.nii``) is accepted when exactly one other NIfTI file in
its folder has ``seg`` in its name.
"""

from __future__ import annotations

from pathlib import Path

from iac.data.layouts.base import CaseSource, DataError, Discovery, LayoutInfo, register_layout
from iac.data.layouts.nnunet import image_files, require_dir, select_channels, strip_ending

CHANNELS = ("flair", "t1", "t1ce", "t2")  # canonical names and default order
# Release family -> (separator before the suffix, file suffix -> canonical channel).
_FAMILIES = {
    "2020/2021": ("_", {"flair": "flair", "t1": "t1", "t1ce": "t1ce", "t2": "t2"}),
    "2023": ("-", {"t2f": "flair", "t1n": "t1", "t1c": "t1ce", "t2w": "t2"}),
}
ALIASES = dict(_FAMILIES["2023"][1])  # 2023 spellings accepted by the modalities option

LABEL_NAMES = {0: "background", 1: "necrotic_core", 2: "edema", 3: "enhancing_tumour"}
REGIONS = {"whole_tumour": (1, 2, 3), "tumour_core": (1, 3), "enhancing_tumour": (3,)}
LABEL_MAPS = {"2020/2021": {0: 0, 1: 1, 2: 2, 4: 3}, "2023": {0: 0, 1: 1, 2: 2, 3: 3}}


def _suffix(stem: str, family: str) -> str | None:
    """The file's role (a suffix key of ``family`` or ``seg``), or None."""
    sep, suffixes = _FAMILIES[family]
    if sep not in stem:
        return None
    tail = stem.rsplit(sep, 1)[1].lower()
    return tail if tail in suffixes or tail == "seg" else None


def _family(folder: Path, files: list[Path]) -> str:
    """Release family of one case folder, from its file names."""
    hits = {f for f in _FAMILIES if any(_suffix(strip_ending(p.name), f) not in (None, "seg") for p in files)}
    if len(hits) != 1:
        found = ", ".join(p.name for p in files) or "no NIfTI files"
        raise DataError(
            f"{folder}: cannot tell the BraTS release; expected <case>_flair|_t1|_t1ce|_t2|_seg.nii.gz "
            f"(2020/2021) or <case>-t1n|-t1c|-t2w|-t2f|-seg.nii.gz (2023), found {found}"
        )
    return hits.pop()


def _case(folder: Path, family: str) -> tuple[dict[str, Path], Path]:
    """Channel files (canonical name -> path) and the label file of one case."""
    sep, suffixes = _FAMILIES[family]
    channels: dict[str, Path] = {}
    seg: Path | None = None
    others: list[Path] = []
    for p in image_files(folder):
        role = _suffix(strip_ending(p.name), family)
        if role is None:
            others.append(p)
        elif role == "seg":
            seg = p
        else:
            name = suffixes[role]
            if name in channels:
                raise DataError(f"{folder}: two {role} files ({channels[name].name}, {p.name}); expected one")
            channels[name] = p
    missing = [s for s, c in suffixes.items() if c not in channels]
    if missing:
        want = ", ".join(f"{folder.name}{sep}{s}.nii.gz" for s in suffixes)
        raise DataError(
            f"{folder}: missing channel(s) {', '.join(missing)}; expected the same four channels in every case ({want})"
        )
    if seg is None:
        loose = [p for p in others if "seg" in p.name.lower()]
        if len(loose) != 1:
            raise DataError(f"{folder}: image without label; expected {folder / (folder.name + sep + 'seg.nii.gz')}")
        seg = loose[0]
    return channels, seg


@register_layout("brats")
def discover(source: Path, options: dict) -> Discovery:
    """Scan a BraTS training-data folder.

    Args:
        source: folder holding one subfolder per case (e.g. ``MICCAI_BraTS2020_TrainingData``).
        options: ``modalities`` (channel names to keep, in order; None keeps flair, t1, t1ce, t2).

    Returns:
        One case per case folder, sorted by case id; label map 4 -> 3 for 2020/2021.

    Raises:
        DataError: no case folders, a folder of neither release or of a different
            release than the others, a missing channel or segmentation, an unknown
            modality name.
    """
    source = require_dir(Path(source), "the BraTS training-data folder with one folder per case")
    folders = sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(
            f"{source}: no case folders; expected one folder per case such as BraTS20_Training_001/ "
            "or BraTS-GLI-00000-000/ holding the four modalities and the seg file"
        )
    picked = [CHANNELS[i] for i in select_channels(CHANNELS, options.get("modalities"), source, ALIASES)]
    family: str | None = None
    cases = []
    for folder in folders:
        fam = _family(folder, image_files(folder))
        if family is None:
            family = fam
        elif fam != family:
            raise DataError(
                f"{folder}: BraTS {fam} file names, but {folders[0].name} has BraTS {family} names; "
                "expected one release per source folder"
            )
        channels, seg = _case(folder, fam)
        cases.append(
            CaseSource(
                case_id=folder.name,
                patient=folder.name,
                frame=None,
                images=tuple(channels[c] for c in picked),
                label=seg,
            )
        )
    info = LayoutInfo(
        name="brats",
        modality="MR",
        channel_names=tuple(picked),
        label_names=dict(LABEL_NAMES),
        label_map=dict(LABEL_MAPS[family]),
        regions=dict(REGIONS),
    )
    return Discovery(info=info, cases=tuple(cases))
