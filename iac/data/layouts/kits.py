"""KiTS19 and KiTS23: kidney tumour segmentation in contrast CT.

Layout as distributed (``kits19/data`` or ``kits23/dataset``; the repository
root holding ``data/`` or ``dataset/`` works too)::

    case_00000/imaging.nii.gz
    case_00000/segmentation.nii.gz
    case_00000/instances/...        (KiTS23 only; ignored)

Labels: KiTS19 0 background, 1 kidney, 2 tumour; KiTS23 adds 3 cyst.
Regions: KiTS19 ``kidney`` {1, 2} (kidney and tumour) and ``tumour`` {2};
KiTS23 ``kidney`` {1, 2, 3} (kidney and masses), ``masses`` {2, 3} and
``tumour`` {2}.

Version rule (labels are never decoded to guess it): option ``kits_version``
(``19`` or ``23``) when given; else KiTS23 when ``kits23.json`` is present, a
case id is 300 or more (KiTS19 stops at case_00299), a case folder has an
``instances/`` subfolder, or the name of the source folder or of its parent
contains ``kits23``; else KiTS19.
KiTS19 cases 210..299 are the official test set and ship without
segmentation: they are skipped; any other case without one is an error.
"""

from __future__ import annotations

import re
from pathlib import Path

from iac.data.layouts.base import CaseSource, DataError, Discovery, LayoutInfo, register_layout
from iac.data.layouts.nnunet import require_dir

_CASE = re.compile(r"^case_(\d{5})$")
KITS19_TEST_IDS = range(210, 300)  # released without segmentation
KITS19_LAST_ID = 299

_LABELS = {
    "19": {0: "background", 1: "kidney", 2: "tumour"},
    "23": {0: "background", 1: "kidney", 2: "tumour", 3: "cyst"},
}
_REGIONS = {
    "19": {"kidney": (1, 2), "tumour": (2,)},
    "23": {"kidney": (1, 2, 3), "masses": (2, 3), "tumour": (2,)},
}


def _case_dirs(source: Path) -> tuple[Path, list[Path]]:
    """The folder holding the ``case_XXXXX`` folders (source, ``data/`` or ``dataset/``) and those folders."""
    for root in (source, source / "data", source / "dataset"):
        if root.is_dir():
            dirs = sorted(p for p in root.iterdir() if p.is_dir() and _CASE.match(p.name))
            if dirs:
                return root, dirs
    raise DataError(
        f"{source}: no case_XXXXX folders; expected the KiTS data folder "
        "(case_00000/imaging.nii.gz, case_00000/segmentation.nii.gz)"
    )


def detect_version(source: Path, root: Path, dirs: list[Path], options: dict) -> str:
    """KiTS release (``"19"`` or ``"23"``) by the rule in the module docstring."""
    opt = options.get("kits_version")
    if opt is not None:
        v = str(opt).lower().removeprefix("kits")
        if v not in _LABELS:
            raise DataError(f"kits_version={opt!r} is not valid; expected 19 or 23")
        return v
    if (root / "kits23.json").is_file() or (source / "kits23.json").is_file():
        return "23"
    if any(int(_CASE.match(d.name)[1]) > KITS19_LAST_ID for d in dirs):
        return "23"
    if any((d / "instances").is_dir() for d in dirs):
        return "23"
    if any("kits23" in p.name.lower() for p in (source.resolve(), source.resolve().parent)):
        return "23"
    return "19"


def _find(folder: Path, stem: str) -> Path | None:
    for end in (".nii.gz", ".nii"):
        if (folder / f"{stem}{end}").is_file():
            return folder / f"{stem}{end}"
    return None


@register_layout("kits")
def discover(source: Path, options: dict) -> Discovery:
    """Scan a KiTS19 or KiTS23 data folder.

    Args:
        source: folder of ``case_XXXXX`` folders, or the repository root holding it as ``data/``/``dataset/``.
        options: ``kits_version`` (``19``/``23``; default: detected).

    Returns:
        One case per labelled ``case_XXXXX`` folder, sorted by case id.

    Raises:
        DataError: no case folders, a case without ``imaging`` or (outside the
            KiTS19 test ids) without ``segmentation``.
    """
    source = require_dir(Path(source), "the KiTS data folder of case_XXXXX folders")
    root, dirs = _case_dirs(source)
    version = detect_version(source, root, dirs, options)
    cases = []
    for d in dirs:
        image = _find(d, "imaging")
        if image is None:
            raise DataError(f"{d}: no imaging.nii.gz; expected imaging.nii.gz and segmentation.nii.gz")
        label = _find(d, "segmentation")
        if label is None:
            if version == "19" and int(_CASE.match(d.name)[1]) in KITS19_TEST_IDS:
                continue  # official KiTS19 test case, unlabelled
            raise DataError(f"{d}: image without label; expected {d / 'segmentation.nii.gz'}")
        cases.append(CaseSource(case_id=d.name, patient=d.name, frame=None, images=(image,), label=label))
    if not cases:
        raise DataError(f"{root}: only unlabelled KiTS19 test cases (case_00210..case_00299); expected labelled cases")
    info = LayoutInfo(
        name="kits",
        modality="CT",
        channel_names=("CT",),
        label_names=dict(_LABELS[version]),
        label_map={},
        regions=dict(_REGIONS[version]),
    )
    return Discovery(info=info, cases=tuple(cases))
