"""The ``prepare`` step: raw dataset folder (or the phantom) -> prepared slice store.

Order of work, so that nothing is written for a bad input:

1. discover the cases with the dataset's layout reader (the phantom is first
   written in the ACDC layout inside the temporary output folder);
2. validate every case (in parallel), collecting every bad file;
3. fingerprint inputs and parameters; reuse an existing ``out`` with the same
   fingerprint;
4. split patients, compute CT statistics on training patients only, derive the
   target spacing and slice size;
5. preprocess and write each case (in parallel, one case in memory per worker)
   into a temporary sibling folder, then the manifest, then rename it to ``out``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

from iac.config import PrepareConfig, to_dict
from iac.data.check import CaseCheck, check_case, label_array
from iac.data.io import file_digest, load_channels, read_image
from iac.data.layouts import get_layout
from iac.data.layouts.base import CaseSource, DataError, Discovery, LayoutInfo
from iac.data.manifest import MANIFEST, manifest_or_none, read_manifest, write_manifest
from iac.data.phantom import PHANTOM_VERSION, write_phantom
from iac.data.testbed import TESTBED_VERSION, write_testbed
from iac.data.preprocess import (
    MODALITIES,
    PreprocessParams,
    ct_statistics,
    derive_slice_size,
    preprocess_case,
    resampled_size,
)
from iac.data.splits import SPLITS, load_split_file, split_patients
from iac.data.store import (
    BAD_CASES,
    STORE_FORMAT_VERSION,
    PreparedDataset,
    atomic_folder,
    fingerprint,
    write_case,
)
from iac.progress import bars_enabled
from iac.tracking import Tracker

log = logging.getLogger(__name__)

RAW_DIR = "raw"  # where the phantom's raw NIfTI files live inside its prepared folder


@dataclass
class PrepareResult:
    """Outcome of :func:`prepare_dataset`.

    Attributes:
        root: the prepared folder.
        manifest: its manifest.
        reused: True when an existing folder with the same fingerprint was reused.
        bad_cases: cases skipped with ``skip_bad`` (``case_id``, ``patient``, ``files``, ``error``).
        seconds: wall-clock time of the call.
    """

    root: Path
    manifest: dict[str, Any]
    reused: bool
    bad_cases: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.manifest.get("counts", {}))


@dataclass
class _Plan:
    """Validated cases and what was learnt about them."""

    info: LayoutInfo
    cases: list[CaseSource]
    checks: dict[str, CaseCheck]
    bad: list[dict[str, Any]]
    channels: tuple[int, ...] | None
    source: Path


# --------------------------------------------------------------------------- settings


def _check_inputs(cfg: PrepareConfig) -> None:
    """Check the files the settings name (the values themselves are checked by PrepareConfig)."""
    if cfg.split_file is not None and not Path(cfg.split_file).is_file():
        raise ValueError(f"split_file {cfg.split_file} does not exist")


def _fingerprint_params(cfg: PrepareConfig) -> dict[str, Any]:
    """The settings that change the prepared data (not ``out``, ``workers``, ``overwrite``)."""
    d = to_dict(cfg)
    for key in ("out", "source", "workers", "overwrite", "split_file"):
        d.pop(key)
    if cfg.dataset != "phantom":
        for key in ("phantom_patients", "phantom_seed", "phantom_size"):
            d.pop(key)
    if cfg.dataset != "phantom" or cfg.phantom_variant == "classic":  # keeps earlier fingerprints valid
        d.pop("phantom_variant")
    if cfg.dataset != "kits" or cfg.kits_version == "auto":  # keeps earlier fingerprints valid
        d.pop("kits_version")
    d["split_file_digest"] = file_digest(Path(cfg.split_file)) if cfg.split_file else None
    return d


# --------------------------------------------------------------------------- parallel map


def _map(fn: Callable[[Any], Any], items: Sequence[Any], workers: int, desc: str, progress: bool) -> list[Any]:
    """``[fn(x) for x in items]`` in ``workers`` processes, with a progress bar; first error re-raised."""
    bar = tqdm(total=len(items), desc=desc, unit="case", disable=not (progress and bars_enabled()), leave=False)
    try:
        if workers <= 1 or len(items) <= 1:
            out = []
            for item in items:
                out.append(fn(item))
                bar.update()
            return out
        ex = ProcessPoolExecutor(max_workers=min(workers, len(items)))
        try:
            futures = [ex.submit(fn, item) for item in items]
            for fut in as_completed(futures):
                fut.result()
                bar.update()
            return [f.result() for f in futures]
        finally:
            ex.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()


def _check_worker(args: tuple[CaseSource, LayoutInfo, tuple[int, ...] | None, int]) -> CaseCheck | dict[str, Any]:
    case, info, channels, n_samples = args
    try:
        return check_case(case, info, channels, n_samples)
    except DataError as err:
        files = [str(p) for p in case.images] + ([str(case.label)] if case.label else [])
        return {"case_id": case.case_id, "patient": case.patient, "files": files, "error": str(err)}


def _write_worker(args: tuple[CaseSource, LayoutInfo, tuple[int, ...] | None, dict[str, Any], Path]) -> dict[str, Any]:
    case, info, channels, params_dict, root = args
    params = PreprocessParams.from_dict(params_dict)
    vols = load_channels(case, channels)
    label_orig = label_array(read_image(case.label), case.label, info)  # (Z, Y, X)
    image, label, geometry = preprocess_case(vols, params, label_orig, name=str(case.label))
    write_case(root, case.case_id, image, label, label_orig)
    return {"case_id": case.case_id, "n_slices": int(image.shape[1]), "geometry": geometry}


# --------------------------------------------------------------------------- steps


def _discover(cfg: PrepareConfig, source: Path) -> Discovery:
    if not source.exists():
        raise DataError(f"source folder {source} does not exist")
    if source.is_dir() and not any(source.iterdir()):
        raise DataError(f"source folder {source} is empty")
    layout = "acdc" if cfg.dataset == "phantom" else cfg.dataset
    options = {
        "amos_modality": cfg.amos_modality,
        "modalities": cfg.modalities,
        "kits_version": None if cfg.kits_version == "auto" else cfg.kits_version,
    }
    disc = get_layout(layout)(source, options)
    if not disc.cases:
        raise DataError(f"no cases found in {source} for the {layout} layout")
    if disc.info.modality not in MODALITIES:
        raise DataError(f"layout {layout} declares modality {disc.info.modality!r}; expected one of {MODALITIES}")
    if cfg.dataset == "phantom":
        disc = Discovery(info=dataclasses.replace(disc.info, name="phantom"), cases=disc.cases)
    return disc


def _select_channels(info: LayoutInfo, modalities: Sequence[str] | None) -> tuple[LayoutInfo, tuple[int, ...] | None]:
    """Channel subset by name (case-insensitive), in the order asked for."""
    if not modalities:
        return info, None
    lower = [c.lower() for c in info.channel_names]
    idx = []
    for m in modalities:
        if m.lower() not in lower:
            raise DataError(
                f"modality {m!r} is not a channel of {info.name}; available: {', '.join(info.channel_names)}"
            )
        idx.append(lower.index(m.lower()))
    return dataclasses.replace(info, channel_names=tuple(info.channel_names[i] for i in idx)), tuple(idx)


def _validate(cfg: PrepareConfig, disc: Discovery, source: Path, progress: bool) -> _Plan:
    info, channels = _select_channels(disc.info, cfg.modalities)
    n_samples = cfg.ct_samples_per_case if info.modality == "CT" else 0
    results = _map(
        _check_worker,
        [(c, info, channels, n_samples) for c in disc.cases],
        cfg.workers,
        "validate",
        progress,
    )
    bad = [r for r in results if isinstance(r, dict)]
    checks = {r.case_id: r for r in results if isinstance(r, CaseCheck)}
    if bad and not cfg.skip_bad:
        lines = "\n".join(f"  - {b['error']}" for b in bad)
        raise DataError(f"{len(bad)} invalid case(s) in {source}:\n{lines}\nfix them, or pass --skip-bad to skip them")
    if not checks:
        raise DataError(f"no valid case left in {source}: all {len(bad)} case(s) are invalid")
    for b in bad:
        log.warning("skipping bad case %s: %s", b["case_id"], b["error"])
    cases = [c for c in disc.cases if c.case_id in checks]
    return _Plan(info=info, cases=cases, checks=checks, bad=bad, channels=channels, source=source)


def _splits(cfg: PrepareConfig, plan: _Plan) -> dict[str, list[str]]:
    patients = sorted({c.patient for c in plan.cases})
    if cfg.split_file:
        gone = {b["patient"] for b in plan.bad} - set(patients)
        return load_split_file(Path(cfg.split_file), patients, ignore=gone)
    try:
        return split_patients(patients, cfg.split_seed, cfg.val_fraction, cfg.test_fraction)
    except ValueError as err:
        raise DataError(f"cannot split the patients of {plan.source}: {err}") from err


def _params(cfg: PrepareConfig, plan: _Plan, splits: dict[str, list[str]]) -> PreprocessParams:
    checks = list(plan.checks.values())
    if cfg.spacing is not None:
        target = (float(cfg.spacing), float(cfg.spacing))
    else:
        target = (
            float(np.median([c.spacing[0] for c in checks])),
            float(np.median([c.spacing[1] for c in checks])),
        )
    if cfg.slice_size is not None:
        size = int(cfg.slice_size)
    else:
        extents = [n for c in checks for n in resampled_size(c.size[:2], c.spacing[:2], target)]
        size = derive_slice_size(extents, cfg.size_multiple)
    clip: tuple = ()
    mean: tuple = ()
    std: tuple = ()
    if plan.info.modality == "CT":
        train = set(splits["train"])
        samples = [c.ct_samples for c in checks if c.patient in train]
        clip, mean, std = ct_statistics(samples, cfg.ct_clip)
    return PreprocessParams(
        target_spacing=target,
        slice_size=size,
        modality=plan.info.modality,
        channel_names=plan.info.channel_names,
        label_map=dict(plan.info.label_map),
        ct_clip=clip,
        ct_mean=mean,
        ct_std=std,
    )


def _relative(path: Path, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(Path(path).resolve())


def _counts(cases: dict[str, Any], splits: dict[str, list[str]], n_bad: int) -> dict[str, int]:
    counts = {
        "n_patients": sum(len(v) for v in splits.values()),
        "n_cases": len(cases),
        "n_slices": sum(c["n_slices"] for c in cases.values()),
        "n_bad_cases": n_bad,
    }
    for s in SPLITS:
        members = set(splits[s])
        chosen = [c for c in cases.values() if c["patient"] in members]
        counts[f"n_{s}_patients"] = len(members)
        counts[f"n_{s}_cases"] = len(chosen)
        counts[f"n_{s}_slices"] = sum(c["n_slices"] for c in chosen)
    return counts


def _build(cfg: PrepareConfig, plan: _Plan, fp: str, tmp: Path, source_label: str, progress: bool) -> dict[str, Any]:
    """Split, derive parameters, write every case and the manifest into ``tmp``."""
    splits = _splits(cfg, plan)
    params = _params(cfg, plan, splits)
    written = _map(
        _write_worker,
        [(c, plan.info, plan.channels, params.to_dict(), tmp) for c in plan.cases],
        cfg.workers,
        "preprocess",
        progress,
    )
    by_id = {w["case_id"]: w for w in written}
    cases: dict[str, Any] = {}
    for c in plan.cases:
        cases[c.case_id] = {
            "patient": c.patient,
            "frame": c.frame,
            "n_slices": by_id[c.case_id]["n_slices"],
            "images": [_relative(p, plan.source) for p in c.images],
            "label": _relative(c.label, plan.source),
            "digests": list(plan.checks[c.case_id].digests),
            "geometry": by_id[c.case_id]["geometry"],
        }
    info = plan.info
    manifest = {
        "format_version": STORE_FORMAT_VERSION,
        "name": info.name,
        "layout": cfg.dataset,
        "modality": info.modality,
        "channel_names": list(info.channel_names),
        "label_names": {str(k): v for k, v in sorted(info.label_names.items())},
        "label_map": {str(k): v for k, v in info.label_map.items()},
        "regions": {k: list(v) for k, v in info.regions.items()},
        "target_spacing": list(params.target_spacing),
        "slice_size": params.slice_size,
        "preprocessing": params.to_dict(),
        "fingerprint": fp,
        "source": source_label,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": to_dict(cfg),
        "splits": splits,
        "counts": _counts(cases, splits, len(plan.bad)),
        "cases": cases,
    }
    (tmp / BAD_CASES).write_text(json.dumps(plan.bad, indent=2))
    write_manifest(tmp, manifest)  # written last: marks completeness
    return manifest


def _reusable(out: Path, fp: str) -> bool:
    manifest = manifest_or_none(out)
    if manifest is None or manifest.get("fingerprint") != fp:
        return False
    try:
        PreparedDataset(out)
    except DataError:
        return False
    return True


def _check_out(out: Path, fp: str, overwrite: bool) -> None:
    """Refuse to replace a folder that is not ours to replace (unless ``overwrite``)."""
    if not out.exists():
        return
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
        return
    if overwrite:
        return
    manifest = manifest_or_none(out)
    if manifest is None:
        raise DataError(f"out {out} exists and is not a prepared dataset; choose another folder")
    raise DataError(
        f"out {out} holds a dataset prepared from other inputs or parameters "
        f"(fingerprint {str(manifest.get('fingerprint'))[:12]}, now {fp[:12]}); "
        "choose another folder or pass --overwrite"
    )


def _log(tracker: Tracker, cfg: PrepareConfig, result: PrepareResult) -> None:
    tracker.log_params(to_dict(cfg))
    tracker.set_tags(
        {"dataset": result.manifest["name"], "data_fingerprint": result.fingerprint, "reused": str(result.reused).lower()}
    )
    tracker.log_metrics({**result.counts, "prepare_seconds": result.seconds})
    tracker.log_artifact(result.root / MANIFEST)
    if (result.root / BAD_CASES).is_file():
        tracker.log_artifact(result.root / BAD_CASES)


def _prepare_phantom(
    cfg: PrepareConfig, out: Path, params: dict[str, Any], progress: bool
) -> tuple[dict[str, Any], bool, list[dict[str, Any]]]:
    """Write the phantom's raw files inside the new folder and prepare them (or reuse ``out``).

    Returns:
        ``(manifest, reused, bad cases)``.
    """
    inputs = {
        "phantom": {
            "version": PHANTOM_VERSION,
            "patients": cfg.phantom_patients,
            "seed": cfg.phantom_seed,
            "size": cfg.phantom_size,
        }
    }
    if cfg.phantom_variant == "testbed":
        inputs["phantom"].update(variant="testbed", version=TESTBED_VERSION)
    fp = fingerprint(inputs, params)
    if _reusable(out, fp):
        manifest = read_manifest(out)
        return manifest, True, json.loads((out / BAD_CASES).read_text())
    _check_out(out, fp, cfg.overwrite)
    with atomic_folder(out, overwrite=cfg.overwrite) as tmp:
        write = write_testbed if cfg.phantom_variant == "testbed" else write_phantom
        raw = write(tmp / RAW_DIR, cfg.phantom_patients, cfg.phantom_seed, cfg.phantom_size)
        plan = _validate(cfg, _discover(cfg, raw), raw, progress)
        manifest = _build(cfg, plan, fp, tmp, RAW_DIR, progress)
    # Paths inside the manifest are relative to raw/, which moved with the folder.
    return manifest, False, plan.bad


def _prepare_source(
    cfg: PrepareConfig, out: Path, params: dict[str, Any], progress: bool
) -> tuple[dict[str, Any], bool, list[dict[str, Any]]]:
    """Validate the raw dataset folder, fingerprint its content and prepare it (or reuse ``out``).

    Returns:
        ``(manifest, reused, bad cases)``.
    """
    source = Path(cfg.source)
    plan = _validate(cfg, _discover(cfg, source), source, progress)
    inputs = {
        "cases": {cid: list(chk.digests) for cid, chk in sorted(plan.checks.items())},
        "bad": sorted(b["case_id"] for b in plan.bad),
    }
    fp = fingerprint(inputs, params)
    if _reusable(out, fp):
        return read_manifest(out), True, plan.bad
    _check_out(out, fp, cfg.overwrite)
    with atomic_folder(out, overwrite=cfg.overwrite) as tmp:
        manifest = _build(cfg, plan, fp, tmp, str(source.resolve()), progress)
    return manifest, False, plan.bad


# --------------------------------------------------------------------------- entry


def prepare_dataset(cfg: PrepareConfig, tracker: Tracker | None = None, progress: bool = True) -> PrepareResult:
    """Prepare a dataset (or reuse an identical earlier preparation).

    Args:
        cfg: the step's settings.
        tracker: where parameters, counts and the manifest are logged (default: nowhere).
        progress: show progress bars.

    Returns:
        The prepared folder, its manifest, whether it was reused, the skipped bad cases.

    Raises:
        ValueError: for invalid settings.
        DataError: for bad input data (naming the file), an ``out`` that holds something
            else, or a crop that would remove labelled voxels. Nothing is left behind.
    """
    start = time.perf_counter()
    _check_inputs(cfg)
    tracker = tracker or Tracker()
    out = Path(cfg.out)
    params = _fingerprint_params(cfg)
    prepare = _prepare_phantom if cfg.dataset == "phantom" else _prepare_source
    manifest, reused, bad = prepare(cfg, out, params, progress)
    result = PrepareResult(out, manifest, reused, bad, time.perf_counter() - start)
    if reused:
        log.info("reusing %s: already prepared with fingerprint %s", out, result.fingerprint[:12])
    else:
        log.info("prepared %s (fingerprint %s) in %.1f s", out, result.fingerprint[:12], result.seconds)
    if bad:
        log.warning("%d bad case(s) skipped, listed in %s", len(bad), out / BAD_CASES)
    _log(tracker, cfg, result)
    return result
