"""What a dataset layout reader returns, and the registry of layouts.

A layout knows where a distributed dataset keeps its files and what its labels
mean; it never decodes images (``iac.data.io`` does, with SimpleITK).
``discover(source)`` lists one :class:`CaseSource` per volume to prepare.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


class DataError(ValueError):
    """Bad input data; the message names the file or folder and the problem."""


@dataclass(frozen=True)
class CaseSource:
    """One volume to prepare, as found on disk.

    Attributes:
        case_id: unique id of the volume, e.g. ``patient001_frame01``.
        patient: patient id (the unit of splitting), e.g. ``patient001``.
        frame: frame name where the dataset has several per patient (ACDC ``ED``/``ES``), else None.
        images: image files, one per channel; a single 4-D file holds all channels.
        label: label file, or None where the dataset has none for this case.
        channel_axis_4d: True when ``images`` is one 4-D file whose last axis holds the channels.
    """

    case_id: str
    patient: str
    frame: str | None
    images: tuple[Path, ...]
    label: Path | None
    channel_axis_4d: bool = False


@dataclass(frozen=True)
class LayoutInfo:
    """What a dataset's labels and channels mean.

    Attributes:
        name: dataset name used in registry names (``acdc``, ``brats``, ...).
        modality: ``MR`` or ``CT`` (selects the intensity normalisation).
        channel_names: names of the image channels, in order.
        label_names: label value -> name, including 0 -> ``background``.
        label_map: raw label value -> stored value (BraTS 2020/21: 4 -> 3); identity when empty.
        regions: evaluated region name -> stored label values it unites (BraTS, KiTS); may be empty.
    """

    name: str
    modality: str
    channel_names: tuple[str, ...]
    label_names: dict[int, str]
    label_map: dict[int, int] = field(default_factory=dict)
    regions: dict[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Discovery:
    """Result of scanning a source folder."""

    info: LayoutInfo
    cases: tuple[CaseSource, ...]


# name -> discover(source: Path, options: dict) -> Discovery
LAYOUTS: dict[str, Callable[[Path, dict], Discovery]] = {}


def register_layout(name: str):
    """Decorator registering a ``discover`` function under a dataset name."""

    def deco(fn: Callable[[Path, dict], Discovery]) -> Callable[[Path, dict], Discovery]:
        LAYOUTS[name] = fn
        return fn

    return deco
