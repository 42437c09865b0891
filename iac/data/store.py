"""The prepared-dataset folder: atomic writing, fingerprint and read access.

Layout of a prepared folder::

    manifest.json                 dataset, labels, preprocessing, fingerprint, cases, splits (iac.data.manifest)
    bad_cases.json                cases skipped with --skip-bad (file, problem); may be empty
    cases/<case_id>/image.npy     float32 (C, Z, H, W)
    cases/<case_id>/label.npy     uint8   (Z, H, W)
    cases/<case_id>/label_orig.npy uint8  (Z, Y, X), the label map on the original grid

All arrays are plain ``.npy`` files, read with ``np.load(mmap_mode="r")`` so a
slice costs one page-cache read and no NIfTI decoding. A folder is written
under a temporary sibling name and renamed into place at the end, so a failed
run never leaves a half-written folder behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from iac.data.layouts.base import DataError
from iac.data.manifest import MANIFEST, read_manifest
from iac.data.preprocess import PreprocessParams, restore_probabilities, restore_to_grid
from iac.data.splits import SPLITS

# Version of the on-disk format; readers refuse other versions.
STORE_FORMAT_VERSION = 1
BAD_CASES = "bad_cases.json"
CASES_DIR = "cases"
IMAGE_FILE = "image.npy"
LABEL_FILE = "label.npy"
LABEL_ORIG_FILE = "label_orig.npy"
_TMP_PREFIX = ".tmp-"


def fingerprint(inputs: Any, params: dict[str, Any]) -> str:
    """Hash of the inputs' content digests, the preprocessing parameters and the store format.

    Args:
        inputs: JSON-able description of the inputs' content (e.g. case id -> file digests).
        params: parameters that change the prepared data.

    Returns:
        A hex sha256 digest.
    """
    blob = json.dumps(
        {"format_version": STORE_FORMAT_VERSION, "inputs": inputs, "params": params},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()


@contextmanager
def atomic_folder(final: Path, overwrite: bool = False) -> Iterator[Path]:
    """Write into a temporary sibling folder, renamed to ``final`` on success.

    On any exception the temporary folder is removed and ``final`` is untouched.

    Args:
        final: the folder to create.
        overwrite: replace an existing ``final`` (it is removed only after the new one is complete).

    Raises:
        FileExistsError: when ``final`` exists and ``overwrite`` is False.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{_TMP_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            if not overwrite:
                raise FileExistsError(f"{final} already exists; pass overwrite to replace it")
            old = final.parent / f"{_TMP_PREFIX}{final.name}-old-{uuid.uuid4().hex[:8]}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_case(root: Path, case_id: str, image: np.ndarray, label: np.ndarray, label_orig: np.ndarray) -> Path:
    """Write one case's arrays under ``root/cases/<case_id>/``.

    Args:
        root: the (temporary) prepared folder.
        case_id: the case.
        image: float32 ``(C, Z, H, W)``.
        label: uint8 ``(Z, H, W)``.
        label_orig: uint8 ``(Z, Y, X)``.
    """
    folder = Path(root) / CASES_DIR / case_id
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / IMAGE_FILE, np.ascontiguousarray(image, dtype=np.float32))
    np.save(folder / LABEL_FILE, np.ascontiguousarray(label, dtype=np.uint8))
    np.save(folder / LABEL_ORIG_FILE, np.ascontiguousarray(label_orig, dtype=np.uint8))
    return folder


@dataclass(frozen=True)
class CaseRecord:
    """One prepared volume.

    Attributes:
        case_id: e.g. ``patient001_frame01``.
        patient: patient id (the unit of splitting).
        frame: ``ED``/``ES`` for ACDC, else None.
        n_slices: number of slices Z.
    """

    case_id: str
    patient: str
    frame: str | None
    n_slices: int


class PreparedDataset:
    """Read access to a prepared folder (validated on opening).

    Args:
        root: the prepared folder.

    Raises:
        DataError: when the folder or its manifest is missing or unreadable, or it was
            written with another store format version.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"prepared dataset folder {self.root} does not exist; run `prepare` first")
        path = self.root / MANIFEST
        self.manifest: dict[str, Any] = read_manifest(self.root)
        version = self.manifest.get("format_version")
        if version != STORE_FORMAT_VERSION:
            raise DataError(
                f"{path}: store format version {version!r}, this code reads version {STORE_FORMAT_VERSION}; "
                "run `prepare` again to rebuild the folder"
            )
        missing = [k for k in ("name", "label_names", "preprocessing", "cases", "splits", "fingerprint") if k not in self.manifest]
        if missing:
            raise DataError(f"{path}: manifest lacks {', '.join(missing)}")
        self._cases = {
            cid: CaseRecord(cid, c["patient"], c.get("frame"), int(c["n_slices"]))
            for cid, c in self.manifest["cases"].items()
        }
        self._params = PreprocessParams.from_dict(self.manifest["preprocessing"])

    # ----------------------------------------------------------------- description

    @property
    def name(self) -> str:
        """Dataset name used in registry names (``phantom``, ``acdc``, ...)."""
        return str(self.manifest["name"])

    @property
    def fingerprint(self) -> str:
        """Hash of inputs and parameters (recorded by later steps as ``data_fingerprint``)."""
        return str(self.manifest["fingerprint"])

    @property
    def label_names(self) -> dict[int, str]:
        """Stored label value -> name; 0 is background."""
        return {int(k): v for k, v in self.manifest["label_names"].items()}

    @property
    def num_classes(self) -> int:
        """Number of output classes (largest label value + 1)."""
        return max(self.label_names) + 1

    @property
    def in_channels(self) -> int:
        """Number of image channels C."""
        return len(self._params.channel_names)

    @property
    def channel_names(self) -> tuple[str, ...]:
        """Image channel names in stored order."""
        return self._params.channel_names

    @property
    def slice_size(self) -> int:
        """Side of the square slices (H = W)."""
        return self._params.slice_size

    @property
    def spacing(self) -> tuple[float, float]:
        """Target in-plane spacing ``(x, y)`` in mm (the slice axis keeps each case's own spacing)."""
        return self._params.target_spacing

    @property
    def modality(self) -> str:
        """``MR`` or ``CT``."""
        return str(self.manifest["modality"])

    @property
    def regions(self) -> dict[str, tuple[int, ...]]:
        """Evaluated region name -> label values it unites (may be empty)."""
        return {k: tuple(v) for k, v in self.manifest.get("regions", {}).items()}

    @property
    def preprocess_params(self) -> PreprocessParams:
        """Parameters to preprocess a raw volume as this dataset was."""
        return self._params

    # ----------------------------------------------------------------- cases

    def patients(self, split: str | None = None) -> list[str]:
        """Patient ids of ``split`` (``train``/``val``/``test``), or of every split when None."""
        if split is None:
            return sorted({p for s in SPLITS for p in self.manifest["splits"].get(s, [])})
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return list(self.manifest["splits"].get(split, []))

    def cases(self, split: str | None = None) -> list[CaseRecord]:
        """Cases of ``split`` (all cases when None), sorted by case id."""
        keep = set(self.patients(split))
        return [c for cid, c in sorted(self._cases.items()) if c.patient in keep]

    def case(self, case_id: str) -> CaseRecord:
        """The record of one case."""
        try:
            return self._cases[case_id]
        except KeyError:
            raise KeyError(f"no case {case_id!r} in {self.root}") from None

    def geometry(self, case_id: str) -> dict[str, Any]:
        """Original geometry and preprocessing window of a case (see ``restore_to_grid``)."""
        self.case(case_id)
        return self.manifest["cases"][case_id]["geometry"]

    def _array(self, case_id: str, name: str) -> np.ndarray:
        self.case(case_id)
        path = self.root / CASES_DIR / case_id / name
        if not path.is_file():
            raise DataError(f"prepared dataset {self.root} is incomplete: {path} is missing")
        return np.load(path, mmap_mode="r")

    def image(self, case_id: str) -> np.ndarray:
        """Memory-mapped image ``(C, Z, H, W)`` float32."""
        return self._array(case_id, IMAGE_FILE)

    def label(self, case_id: str) -> np.ndarray:
        """Memory-mapped label map ``(Z, H, W)`` uint8 on the preprocessed grid."""
        return self._array(case_id, LABEL_FILE)

    def original_label(self, case_id: str) -> tuple[np.ndarray, tuple[float, float, float]]:
        """Label map ``(Z, Y, X)`` on the original grid and its spacing ``(x, y, z)`` in mm."""
        spacing = tuple(float(s) for s in self.geometry(case_id)["spacing"])
        return self._array(case_id, LABEL_ORIG_FILE), spacing

    def to_original_grid(self, case_id: str, prediction: np.ndarray, first_slice: int = 0) -> np.ndarray:
        """A prediction on the preprocessed grid as a label map ``(Z, Y, X)`` on the case's original grid.

        Args:
            case_id: the case.
            prediction: class probabilities ``(K, Z, H, W)`` (restored linearly,
                then argmax: :func:`iac.data.preprocess.restore_probabilities`)
                for ``Z`` slices from ``first_slice``, or a hard label map
                ``(Z, H, W)`` of every slice (nearest neighbour:
                :func:`iac.data.preprocess.restore_to_grid`).
            first_slice: first slice of a probability stack.
        """
        prediction = np.asarray(prediction)
        if prediction.ndim == 4:
            return restore_probabilities(prediction, self.geometry(case_id), first_slice)
        if first_slice:
            raise ValueError("a hard label map is restored whole: first_slice must be 0")
        return restore_to_grid(prediction, self.geometry(case_id))

    def __repr__(self) -> str:
        return f"PreparedDataset({str(self.root)!r}, name={self.name!r}, cases={len(self._cases)})"
