"""Segment a folder (or list) of raw, unlabelled images: one label file per image, on its own grid.

The images are found and grouped here; reading, preprocessing and the network
are behind a ``segment(files, out)`` callable the caller hands in (the
``predict`` command passes the registered model's
:func:`iac.serving.segment_file`). A file that cannot be segmented is listed
with its reason and skipped, or stops the run when ``strict``.

Channel files follow nnU-Net's naming: ``<case>_0000.nii.gz``,
``<case>_0001.nii.gz``, ... (one file per channel, in the model's channel
order), or ``<case>_<channel name>.nii.gz`` with the model's channel names
(BraTS); a single 4-D file holds all channels. The label file is named
``<case><suffix>`` (``_0000`` dropped).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

# Image files ``prepare`` reads (NIfTI, and SimpleITK's MetaImage and NRRD for nnU-Net folders).
IMAGE_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
# nnU-Net's channel suffix: ``_0000`` .. ``_9999``.
_NNUNET_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
SUMMARY_FILE = "predict_summary.json"


class PredictInputError(ValueError):
    """The inputs name no image, or a case lacks channel files."""


@dataclass(frozen=True)
class ImageCase:
    """One image to segment: its name and its file(s), one per channel (or one 4-D file)."""

    case: str
    files: tuple[Path, ...]


@dataclass
class PredictSummary:
    """What a batch prediction did: written labels, failed cases with reasons, wall time."""

    written: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def image_ending(path: Path) -> str | None:
    """The image ending of ``path`` (``.nii.gz``, ...), or None for a file that is not an image."""
    name = path.name.lower()
    return next((e for e in IMAGE_ENDINGS if name.endswith(e)), None)


def _stem(path: Path) -> str:
    ending = image_ending(path) or path.suffix
    return path.name[: len(path.name) - len(ending)]


def find_cases(inputs: Sequence[Path], channel_names: Sequence[str] = ("image",)) -> list[ImageCase]:
    """The image cases under ``inputs`` (folders are listed, not recursed; files taken as given).

    Args:
        inputs: folders and/or image files.
        channel_names: the model's input channels; with more than one, files are
            grouped into cases by nnU-Net's ``_NNNN`` suffix or by ``_<channel name>``.

    Raises:
        PredictInputError: an input does not exist, nothing is an image, or a
            multi-channel case lacks a channel file.
    """
    files: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            files += sorted(p for p in item.iterdir() if p.is_file() and image_ending(p) and not p.name.startswith("."))
        elif item.is_file():
            files.append(item)
        else:
            raise PredictInputError(f"input {item}: no such file or folder")
    if not files:
        raise PredictInputError(
            f"no image files in {', '.join(map(str, inputs))} (expected {', '.join(IMAGE_ENDINGS)})"
        )
    if len(channel_names) == 1:
        return [ImageCase(_case_name(f), (f,)) for f in files]
    return _group_channels(files, tuple(channel_names))


def _case_name(path: Path) -> str:
    stem = _stem(path)
    m = _NNUNET_CHANNEL.match(stem)
    return m.group("case") if m and m.group("channel") == "0000" else stem


def _group_channels(files: list[Path], channels: tuple[str, ...]) -> list[ImageCase]:
    """Multi-channel cases: by ``_NNNN`` index or ``_<channel name>``; a file with neither is one 4-D case."""
    groups: dict[str, dict[int, Path]] = {}
    whole: list[ImageCase] = []
    lower = [c.lower() for c in channels]
    for f in files:
        stem = _stem(f)
        m = _NNUNET_CHANNEL.match(stem)
        case, index = (m.group("case"), int(m.group("channel"))) if m else (None, None)
        if case is None:
            for i, name in enumerate(lower):
                if stem.lower().endswith("_" + name):
                    case, index = stem[: -len(name) - 1], i
                    break
        if case is None:
            whole.append(ImageCase(stem, (f,)))
            continue
        if index >= len(channels):
            raise PredictInputError(f"{f}: channel {index} but the model takes {len(channels)} ({', '.join(channels)})")
        groups.setdefault(case, {})[index] = f
    cases = list(whole)
    for case, by_index in sorted(groups.items()):
        missing = [channels[i] for i in range(len(channels)) if i not in by_index]
        if missing:
            raise PredictInputError(
                f"case {case}: no file for channel(s) {', '.join(missing)} "
                f"(expected {case}_0000 .. {case}_{len(channels) - 1:04d}, one per channel {', '.join(channels)})"
            )
        cases.append(ImageCase(case, tuple(by_index[i] for i in range(len(channels)))))
    return sorted(cases, key=lambda c: c.case)


def predict_cases(
    cases: Sequence[ImageCase],
    segment: Callable[[tuple[Path, ...], Path], object],
    out_dir: Path,
    suffix: str = ".nii.gz",
    strict: bool = False,
    progress: bool = False,
    echo: Callable[[str], None] = print,
) -> PredictSummary:
    """Segment every case into ``out_dir/<case><suffix>``; list the failures (or stop at one when ``strict``).

    Args:
        cases: from :func:`find_cases`.
        segment: ``segment(files, out_path)`` reads, predicts and writes one label file.
        out_dir: the output folder (created); ``predict_summary.json`` goes there too.
        suffix: the label files' ending (any format SimpleITK writes).
        strict: re-raise the first failure instead of listing it.
        progress: draw a progress bar (a terminal); otherwise one line per case.
        echo: where per-case lines and the summary go.

    Returns:
        The summary (also written to ``out_dir/predict_summary.json``).
    """
    from tqdm.auto import tqdm

    from iac.atomic import atomic_write_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = PredictSummary()
    t0 = time.perf_counter()
    bar = tqdm(cases, desc="predict", unit="image", disable=not progress)
    for n, case in enumerate(bar, 1):
        target = out_dir / f"{case.case}{suffix}"
        try:
            segment(case.files, target)
        except Exception as err:  # noqa: BLE001 - any failure of one image is listed, not fatal
            if strict:
                raise
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            summary.failed.append({"case": case.case, "files": ", ".join(map(str, case.files)), "error": reason})
            status = f"FAILED ({reason})"
        else:
            summary.written.append(str(target))
            status = f"-> {target.name}"
        if not progress:
            echo(f"[{n}/{len(cases)}] {case.case} {status}")
    summary.seconds = time.perf_counter() - t0
    atomic_write_text(out_dir / SUMMARY_FILE, json.dumps(summary.to_dict(), indent=1))
    echo(
        f"predict: {len(summary.written)} of {len(cases)} image(s) segmented into {out_dir} "
        f"in {summary.seconds:.1f} s" + (f"; {len(summary.failed)} failed:" if summary.failed else "")
    )
    for bad in summary.failed:
        echo(f"  {bad['files']}: {bad['error']}")
    return summary
