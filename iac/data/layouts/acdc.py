"""ACDC (Automated Cardiac Diagnosis Challenge) raw layout.

``source`` is the distributed ``database`` folder (holding ``training`` and
``testing``), one of those subfolders, or any folder of ``patientNNN``
folders. Each patient folder holds ``Info.cfg`` (``ED: n`` and ``ES: n`` give
the frame numbers) and, per frame, ``patientNNN_frameXX.nii.gz`` with its label
map ``patientNNN_frameXX_gt.nii.gz``. Both frames of a patient are prepared;
they share the patient id, so splits keep them together.
"""

from __future__ import annotations

import re
from pathlib import Path

from iac.data.layouts.base import CaseSource, DataError, Discovery, LayoutInfo, register_layout

INFO = LayoutInfo(
    name="acdc",
    modality="MR",
    channel_names=("cine",),
    label_names={0: "background", 1: "RV", 2: "myocardium", 3: "LV"},
)
SUBSETS = ("training", "testing")
_PATIENT = re.compile(r"^patient\d+$")
_EXTENSIONS = (".nii.gz", ".nii")


def read_info_cfg(path: Path) -> dict[str, str]:
    """Parse an ACDC ``Info.cfg`` (``key: value`` lines) into a dict.

    Raises:
        DataError: when the file is missing or a line is not ``key: value``.
    """
    if not path.is_file():
        raise DataError(f"missing ACDC info file {path} (expected 'ED: n' and 'ES: n' lines)")
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise DataError(f"{path}, line {n}: expected 'key: value', got {line!r}")
        out[key.strip()] = value.strip()
    return out


def _frame_file(folder: Path, stem: str) -> Path:
    """The existing file ``stem`` + one of the NIfTI extensions, else the ``.nii.gz`` name."""
    for ext in _EXTENSIONS:
        if (folder / f"{stem}{ext}").exists():
            return folder / f"{stem}{ext}"
    return folder / f"{stem}{_EXTENSIONS[0]}"


def _patient_folders(source: Path) -> list[Path]:
    direct = [p for p in source.iterdir() if p.is_dir() and _PATIENT.match(p.name)]
    if direct:
        return sorted(direct)
    found = []
    for subset in SUBSETS:
        sub = source / subset
        if sub.is_dir():
            found += [p for p in sub.iterdir() if p.is_dir() and _PATIENT.match(p.name)]
    return sorted(found, key=lambda p: p.name)


@register_layout("acdc")
def discover(source: Path, options: dict) -> Discovery:
    """List both frames (ED, ES) of every ACDC patient under ``source``.

    Args:
        source: ``database`` folder, its ``training``/``testing`` subfolder, or a folder of patients.
        options: unused (ACDC has one channel and one label set).

    Returns:
        One :class:`CaseSource` per frame, case ids like ``patient001_frame01``.

    Raises:
        DataError: missing source, no patient folders, a bad ``Info.cfg``, a missing image,
            or one patient id found in both subsets.
    """
    source = Path(source)
    if not source.is_dir():
        raise DataError(f"ACDC source folder {source} does not exist or is not a folder")
    folders = _patient_folders(source)
    if not folders:
        raise DataError(
            f"no ACDC patient folders (patientNNN) in {source} or its {'/'.join(SUBSETS)} subfolders"
        )
    seen: dict[str, Path] = {}
    cases = []
    for folder in folders:
        pid = folder.name
        if pid in seen:
            raise DataError(f"ACDC patient {pid} appears twice: {seen[pid]} and {folder}")
        seen[pid] = folder
        info_path = folder / "Info.cfg"
        info = read_info_cfg(info_path)
        for frame in ("ED", "ES"):
            value = info.get(frame, "")
            if not value.isdigit():
                raise DataError(f"{info_path}: expected an integer frame number for {frame!r}, got {value!r}")
            stem = f"{pid}_frame{int(value):02d}"
            image = _frame_file(folder, stem)
            if not image.exists():
                raise DataError(f"missing ACDC image {image} ({frame} frame named in {info_path})")
            label = _frame_file(folder, f"{stem}_gt")
            cases.append(CaseSource(case_id=stem, patient=pid, frame=frame, images=(image,), label=label))
    # ED and ES may name the same frame in a broken Info.cfg: keep case ids unique.
    ids = [c.case_id for c in cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise DataError(f"ACDC: ED and ES name the same frame for {', '.join(dupes)}; check their Info.cfg")
    return Discovery(info=INFO, cases=tuple(cases))
