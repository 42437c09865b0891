"""The project's one GPU script: the search's CUDA path, timed and checked in one run.

Sections, each in its own time box, each writing its results as it finishes
(one JSON and one Markdown table, rewritten after every section):

1. ``device``: CUDA smoke (a matrix product, a convolution, a U-Net step on
   the device) and device facts (card, capability, memory, versions).
2. ``steps``: plain U-Net vs supernet (all operations; one operation per
   edge) step time and peak memory at 64, 128 and 256 px, in float32 and in
   mixed precision (the search's autocast dtype: float16 on CUDA).
3. ``arch_grad``: architecture gradients (alpha, beta) of one batch in
   float32 and under mixed precision (float16 with and without loss scaling,
   bfloat16): zero counts and relative error against float32.
4. ``determinism``: two seeded short searches with
   ``torch.use_deterministic_algorithms(True)`` (and ``CUBLAS_WORKSPACE_CONFIG``,
   set by this script before torch starts) give equal genotypes and equal
   architecture weights; operations without a deterministic kernel are listed.
5. ``search``: a short full search vs IAC-LTH on a cohort generated in memory
   at 128 px, with epoch times before and after pruning.

The whole run stays under ``--budget`` seconds (default 360). It needs only
torch and numpy (MONAI for the validation Dice of section 5) and the
project's core modules, never MLflow or SimpleITK.

Usage (from the project root, on a GPU host)::

    python benchmarks/gpu_suite.py --out outputs/gpu_suite

``--cpu-smoke`` runs every section on CPU with tiny settings (CI checks the
script this way; its figures mean nothing).
"""

from __future__ import annotations

import os

# Deterministic cuBLAS needs this before CUDA starts (section 4).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from iac.atomic import atomic_write_text  # noqa: E402
from iac.config import SearchConfig, StabilityConfig  # noqa: E402
from iac.models import create_backbone  # noqa: E402
from iac.nas import SearchNetwork, SearchSpace  # noqa: E402

JSON_NAME = "gpu_suite.json"
MD_NAME = "gpu_suite.md"


@dataclass(frozen=True)
class Settings:
    """Sizes of one run of the suite (``FULL`` on a GPU, ``SMOKE`` for CI on CPU)."""

    budget_s: float  # the whole run
    boxes: dict  # section -> its weight: a section's time box is its share of what is left of the budget
    sizes: tuple[int, ...]  # section 2: square input sides
    batch: int  # sections 2 and 3
    repeats: int  # section 2: timed steps (after 2 warm-up steps)
    cell_channels: int  # the supernet (the benchmark configuration: 16, K 4, 4 nodes)
    k: int
    nodes: int
    cohort_size: int  # section 5 (and 3): image side of the in-memory cohort
    patients: int  # in-memory cohort: patients (of which `val_patients` for validation)
    val_patients: int
    slices: int  # slices per patient
    baseline_epochs: int  # plain U-Net training before the searches
    search_epochs: int  # section 5
    det_epochs: int  # section 4 (short searches at 64 px, or the smoke size)
    det_size: int
    warmup_epochs: int
    check_every: int
    search_batch: int


FULL = Settings(
    budget_s=360.0,
    boxes={"device": 20, "steps": 120, "arch_grad": 25, "determinism": 60, "search": 120},
    sizes=(64, 128, 256), batch=16, repeats=5, cell_channels=16, k=4, nodes=4,
    cohort_size=128, patients=28, val_patients=4, slices=16, baseline_epochs=4, search_epochs=8,
    det_epochs=2, det_size=64, warmup_epochs=1, check_every=4, search_batch=16,
)
SMOKE = Settings(
    budget_s=240.0,
    boxes={"device": 20, "steps": 60, "arch_grad": 30, "determinism": 60, "search": 60},
    sizes=(32,), batch=2, repeats=1, cell_channels=8, k=4, nodes=2,
    cohort_size=32, patients=6, val_patients=2, slices=4, baseline_epochs=1, search_epochs=3,
    det_epochs=2, det_size=32, warmup_epochs=1, check_every=1, search_batch=2,
)


class TimeUp(Exception):
    """A section ran out of its time box."""


class Clock:
    """Deadlines: the whole run's and the current section's."""

    def __init__(self, budget_s: float):
        self.start = time.perf_counter()
        self.end = self.start + budget_s
        self.section_end = self.end

    def open(self, box_s: float) -> None:
        self.section_end = min(self.end, time.perf_counter() + box_s)

    def left(self) -> float:
        return self.section_end - time.perf_counter()

    def check(self, need_s: float = 0.0) -> None:
        """Raise :class:`TimeUp` when fewer than ``need_s`` seconds are left in the section."""
        if self.left() < need_s:
            raise TimeUp(f"time box reached ({self.left():.1f} s left, {need_s:.1f} s needed)")

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


# In-memory cohort ---------------------------------------------------------------


@dataclass(frozen=True)
class MemoryCase:
    """One volume of the in-memory cohort (the fields the loops read of a prepared case)."""

    case_id: str
    patient: str
    frame: str | None
    n_slices: int


class MemoryCohort:
    """A small labelled cohort generated in memory, read like a prepared dataset.

    Each patient is a stack of 2-D slices with a ring (class 2) around a disk
    (class 1) and a crescent beside them (class 3), whose sizes and positions
    vary smoothly across slices and between patients, on a noisy background
    with a smooth intensity bias. It offers what the search, its loaders and
    the validation read: ``name``, ``root``, ``num_classes``, ``in_channels``,
    ``patients(split)``, ``cases(split)``, ``image(case_id)`` (C, Z, H, W)
    float32 and ``label(case_id)`` (Z, H, W) uint8.
    """

    num_classes = 4
    in_channels = 1

    def __init__(self, n_patients: int, n_val: int, slices: int, size: int, seed: int = 0):
        self.name = f"memory{size}"
        self.root = Path(f"<in-memory cohort {size}px>")
        rng = np.random.default_rng(seed)
        self._images: dict[str, np.ndarray] = {}
        self._labels: dict[str, np.ndarray] = {}
        ids = [f"p{i:03d}" for i in range(n_patients)]
        self._splits = {"train": ids[n_val:], "val": ids[:n_val], "test": []}
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size  # (H, W) in [0, 1)
        for pid in ids:
            cy, cx = rng.uniform(0.4, 0.6, 2)
            r0 = rng.uniform(0.12, 0.2)
            img = np.empty((1, slices, size, size), np.float32)
            lab = np.zeros((slices, size, size), np.uint8)
            for z in range(slices):
                t = z / max(slices - 1, 1)
                r = r0 * (1.0 - 0.5 * t)  # the structures shrink towards the apex
                d = np.hypot(yy - cy, xx - cx)
                lab[z][np.hypot(yy - cy, xx - cx - 1.3 * r) < 1.2 * r] = 3  # beside the ring, partly under it
                lab[z][d < r * 1.4] = 2
                lab[z][d < r] = 1
                bias = 0.2 * np.sin(3 * yy + rng.uniform(0, 3)) * np.cos(2 * xx)
                means = np.array([0.1, 0.9, 0.45, 0.7], np.float32)
                img[0, z] = means[lab[z]] + bias + rng.normal(0, 0.08, (size, size)).astype(np.float32)
            self._images[pid] = img
            self._labels[pid] = lab
        self._slices = slices

    def patients(self, split: str) -> list[str]:
        return list(self._splits[split])

    def cases(self, split: str | None) -> list[MemoryCase]:
        ids = self._splits[split] if split is not None else [p for s in ("train", "val") for p in self._splits[s]]
        return [MemoryCase(p, p, None, self._slices) for p in ids]

    def image(self, case_id: str) -> np.ndarray:
        return self._images[case_id]

    def label(self, case_id: str) -> np.ndarray:
        return self._labels[case_id]

    def batches(self, split: str, batch: int, seed: int):
        """Shuffled (image (B, 1, H, W), label (B, 1, H, W)) CPU batches of one epoch."""
        x = torch.from_numpy(np.concatenate([self._images[p][0] for p in self._splits[split]]))[:, None]
        y = torch.from_numpy(np.concatenate([self._labels[p] for p in self._splits[split]]).astype(np.int64))[:, None]
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        for i in range(0, len(x) - batch + 1, batch):
            idx = order[i : i + batch]
            yield x[idx], y[idx]


# Helpers --------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def amp_dtype(device: torch.device) -> torch.dtype:
    """The mixed-precision dtype: the search's (float16) on CUDA, bfloat16 for the CPU smoke."""
    from iac.train.device import AMP_DTYPE

    return AMP_DTYPE if device.type == "cuda" else torch.bfloat16


def space_of(s: Settings) -> SearchSpace:
    cfg = SearchConfig(cell_channels=s.cell_channels, k=s.k, nodes=s.nodes)
    return SearchSpace.from_config(cfg)


def prune_one_op(net: SearchNetwork) -> None:
    """One operation per edge, cycling through the candidates (as benchmarks/supernet_bench.py)."""
    candidates = [op for op in net.space.ops if op != "none"]
    for arch in range(net.n_archs):
        for e in range(len(net.space.edges())):
            net.prune_ops(arch, e, [candidates[e % len(candidates)]])


def build_models(s: Settings, device: torch.device, classes: int = 4) -> dict[str, torch.nn.Module]:
    """plain U-Net, supernet with all operations, supernet with one operation per edge (same seed)."""
    space = space_of(s)
    torch.manual_seed(0)
    plain = create_backbone("unet", 1, classes)
    torch.manual_seed(0)
    full = SearchNetwork(create_backbone("unet", 1, classes), space)
    torch.manual_seed(0)
    one = SearchNetwork(create_backbone("unet", 1, classes), space)
    prune_one_op(one)
    return {name: m.to(device).train() for name, m in (("plain", plain), ("supernet-all", full), ("supernet-1op", one))}


def step_once(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype | None) -> None:
    """One forward and backward pass (``loss = mean(logits)``), under autocast to ``dtype`` if given."""
    for p in model.parameters():
        p.grad = None
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        out = model(x)
    out.float().mean().backward()


def measure_step(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype | None, repeats: int,
                 clock: Clock) -> dict[str, Any]:
    """Median step seconds (2 warm-up steps) and, on CUDA, the peak memory of one step over the resting state."""
    device = x.device
    for _ in range(2):
        step_once(model, x, dtype)
    _sync(device)
    peak = None
    if device.type == "cuda":
        for p in model.parameters():
            p.grad = None
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step_once(model, x, dtype)
        _sync(device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    times = []
    for _ in range(repeats):
        clock.check()
        t0 = time.perf_counter()
        step_once(model, x, dtype)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {"ms": 1e3 * statistics.median(times), "peak_mib": peak}


def flat_grads(grads) -> torch.Tensor:
    return torch.cat([g.detach().reshape(-1).double().cpu() for g in grads])


# Sections -------------------------------------------------------------------------


def section_device(s: Settings, device: torch.device, clock: Clock, out: dict[str, Any]) -> dict[str, Any]:
    """Versions, the card, and a smoke test of the operations the search runs."""
    out.update({
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "device": str(device), "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
    })
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(name=props.name, capability=f"{props.major}.{props.minor}",
                   memory_gib=round(props.total_memory / 2**30, 1), multiprocessors=props.multi_processor_count,
                   bf16_supported=torch.cuda.is_bf16_supported(), tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    else:
        out["name"] = platform.processor() or platform.machine()
    a = torch.randn(256, 256, device=device)
    err = (a @ a.T - (a.double() @ a.double().T).float()).abs().max().item()
    out["matmul_max_abs_error"] = err
    conv = torch.nn.Conv2d(4, 4, 3, padding=1, groups=4).to(device)
    y = conv(torch.randn(2, 4, 16, 16, device=device))
    y.sum().backward()
    out["depthwise_conv_grad_finite"] = bool(torch.isfinite(conv.weight.grad).all())
    torch.manual_seed(0)
    net = SearchNetwork(create_backbone("unet", 1, 4), space_of(s)).to(device).train()
    x = torch.randn(2, 1, 32, 32, device=device)
    step_once(net, x, None)
    step_once(net, x, amp_dtype(device))
    _sync(device)
    out["supernet_step_ok"] = True
    return out


def section_steps(s: Settings, device: torch.device, clock: Clock, result: dict[str, Any]) -> dict[str, Any]:
    """Step time and peak memory: plain vs supernet (all ops, one per edge), sizes x precisions."""
    rows: list[dict[str, Any]] = []
    result.update(batch=s.batch, repeats=s.repeats, space=space_of(s).to_dict(), rows=rows)
    models = build_models(s, device)
    for size in s.sizes:
        for precision in ("fp32", "amp"):
            dtype = None if precision == "fp32" else amp_dtype(device)
            x = torch.randn(s.batch, 1, size, size, device=device)
            base = None
            for name, model in models.items():  # plain first: the ratios are to it
                clock.check()
                row: dict[str, Any] = {"size": size, "precision": precision, "dtype": str(dtype or torch.float32),
                                       "model": name}
                try:
                    row.update(measure_step(model, x, dtype, s.repeats, clock))
                except torch.cuda.OutOfMemoryError:
                    row["error"] = "out of memory"
                    torch.cuda.empty_cache()
                if name == "plain" and "ms" in row:
                    base = row
                if base is not None and "ms" in row:
                    row["x_plain_time"] = row["ms"] / base["ms"]
                    if row["peak_mib"] is not None and base["peak_mib"]:
                        row["x_plain_memory"] = row["peak_mib"] / base["peak_mib"]
                rows.append(row)
    return result


def _arch_grads(net: SearchNetwork, loss_fn, x, y, dtype, scale: float):
    """Architecture gradients of one batch: forward under autocast to ``dtype`` (None: float32), loss times ``scale``."""
    params = net.arch_parameters()
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        logits = net(x)
    loss = loss_fn(logits.float(), y) * scale
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [(g if g is not None else torch.zeros_like(p)) / scale for g, p in zip(grads, params)]


def section_arch_grad(s: Settings, device: torch.device, clock: Clock, cohort: MemoryCohort,
                      result: dict[str, Any]) -> dict[str, Any]:
    """alpha/beta gradients in float32 vs mixed precision on one batch of the cohort.

    The cells' zero-initialised output projections are set to N(0, 0.05^2)
    (seeded) first: with them at zero every architecture gradient is exactly
    zero, as right after implantation.
    """
    from iac.train.losses import make_loss

    torch.manual_seed(0)
    net = SearchNetwork(create_backbone("unet", 1, cohort.num_classes), space_of(s)).to(device).train()
    g = torch.Generator().manual_seed(1)
    for skip in net.iac_skips():
        with torch.no_grad():
            skip.proj.weight.copy_(0.05 * torch.randn(skip.proj.weight.shape, generator=g))
    x, y = next(cohort.batches("train", s.batch, seed=0))
    x, y = x.to(device), y.to(device)
    loss_fn = make_loss()
    state = copy.deepcopy(net.state_dict())  # every variant starts from the same BatchNorm statistics

    def run(dtype, scale):
        net.load_state_dict(state)
        return flat_grads(_arch_grads(net, loss_fn, x, y, dtype, scale))

    rows: list[dict[str, Any]] = []
    result.update(batch=s.batch, size=cohort_size_of(cohort), rows=rows)
    ref = run(None, 1.0)
    half = torch.float16
    variants = {"fp16, loss scale 2^16 (GradScaler's start)": (half, 2.0**16), "fp16, unscaled": (half, 1.0),
                "bf16": (torch.bfloat16, 1.0)}
    rows.append({"variant": "fp32", "n": ref.numel(), "zeros": int((ref == 0).sum()), "rel_error": 0.0,
                 "cosine": 1.0, "max_abs": float(ref.abs().max())})
    for name, (dtype, scale) in variants.items():
        clock.check()
        row: dict[str, Any] = {"variant": name}
        try:
            grad = run(dtype, scale)
            row.update(n=grad.numel(), zeros=int((grad == 0).sum()), finite=bool(torch.isfinite(grad).all()),
                       rel_error=float((grad - ref).norm() / ref.norm()),
                       cosine=float(torch.nn.functional.cosine_similarity(grad, ref, dim=0)),
                       max_abs=float(grad.abs().max()))
        except RuntimeError as err:  # e.g. a dtype without kernels on this device
            row["error"] = str(err).splitlines()[0][:200]
        rows.append(row)
    return result


def cohort_size_of(cohort: MemoryCohort) -> int:
    first = cohort.patients("train")[0]
    return int(cohort.image(first).shape[-1])


def _search_cfg(s: Settings, device: torch.device, epochs: int, **extra) -> SearchConfig:
    return SearchConfig(epochs=epochs, warmup_epochs=s.warmup_epochs, batch_size=s.search_batch,
                        cell_channels=s.cell_channels, k=s.k, nodes=s.nodes, device=str(device), seed=0,
                        check_every=s.check_every, **extra)


def _train_baseline(cohort: MemoryCohort, device: torch.device, epochs: int, batch: int) -> torch.nn.Module:
    """A plain U-Net trained briefly on the cohort (the frozen backbone of the searches)."""
    from iac.train.losses import make_loss

    torch.manual_seed(0)
    unet = create_backbone("unet", 1, cohort.num_classes).to(device).train()
    opt = torch.optim.AdamW(unet.parameters(), lr=3e-3)
    loss_fn = make_loss()
    for epoch in range(epochs):
        for x, y in cohort.batches("train", batch, seed=epoch):
            opt.zero_grad(set_to_none=True)
            loss_fn(unet(x.to(device)), y.to(device)).backward()
            opt.step()
    return unet.cpu()


def _short_search(cfg: SearchConfig, unet: torch.nn.Module, cohort: MemoryCohort, strict: bool) -> dict[str, Any]:
    """The search loop for ``cfg.epochs`` epochs with ``use_deterministic_algorithms(True, warn_only=not strict)``."""
    import random

    from iac.nas.pruning import NoPruning
    from iac.nas.search import SearchState, search_epoch

    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=not strict)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = SearchState(cfg, copy.deepcopy(unet), cohort, NoPruning())
        for epoch in range(cfg.epochs):
            search_epoch(state, epoch, progress=False)
    nondet = sorted({str(w.message).splitlines()[0][:160] for w in caught if "deterministic" in str(w.message)})
    return {"genotype": str(state.supernet.genotype()),
            "arch": [p.detach().cpu().clone() for p in state.supernet.arch_parameters()],
            "nondeterministic_ops": nondet}


def section_determinism(s: Settings, device: torch.device, clock: Clock, out: dict[str, Any]) -> dict[str, Any]:
    """Two seeded short searches under deterministic algorithms give equal genotypes and weights."""
    out.update(size=s.det_size, epochs=s.det_epochs, cublas_workspace_config=os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    cohort = MemoryCohort(max(4, s.patients // 2), 1, s.slices, s.det_size, seed=2)
    unet = _train_baseline(cohort, device, 1, s.search_batch)
    cfg = _search_cfg(s, device, s.det_epochs)
    strict = True
    try:
        first = _short_search(cfg, unet, cohort, strict=True)
    except RuntimeError as err:  # an operation without a deterministic kernel: name it, then warn only
        out["strict_error"] = str(err).splitlines()[0][:300]
        strict = False
        clock.check()
        first = _short_search(cfg, unet, cohort, strict=False)
    clock.check()
    second = _short_search(cfg, unet, cohort, strict=strict)
    torch.use_deterministic_algorithms(False)
    out.update(strict=strict, genotype_1=first["genotype"], genotype_2=second["genotype"],
               equal_genotypes=first["genotype"] == second["genotype"],
               equal_arch_weights=all(torch.equal(a, b) for a, b in zip(first["arch"], second["arch"])),
               max_arch_difference=max(float((a - b).abs().max()) for a, b in zip(first["arch"], second["arch"])),
               nondeterministic_ops=sorted(set(first["nondeterministic_ops"]) | set(second["nondeterministic_ops"])))
    return out


def section_search(s: Settings, device: torch.device, clock: Clock, cohort: MemoryCohort,
                   out: dict[str, Any]) -> dict[str, Any]:
    """A short full search and an IAC-LTH search from the same baseline; epoch times before/after pruning."""
    from iac.nas.pruning import JSStabilityPruning, NoPruning
    from iac.nas.search import run_search

    t0 = time.perf_counter()
    unet = _train_baseline(cohort, device, s.baseline_epochs, s.search_batch)
    out.update(size=cohort_size_of(cohort), patients=s.patients, slices=s.slices,
               baseline_seconds=time.perf_counter() - t0, runs={})
    cfg = _search_cfg(s, device, s.search_epochs)
    # Stability settings for a short run (patience 1: every stable check prunes one step of 3, 2, 1).
    stability = StabilityConfig(tau=1e-4, patience=1)
    out["stability"] = {"tau": stability.tau, "patience": stability.patience,
                        "keep_schedule": list(stability.keep_schedule)}
    for method in ("full", "lth"):
        clock.check(5.0)
        policy = NoPruning() if method == "full" else JSStabilityPruning(SearchSpace.from_config(cfg), stability)
        epochs: list[dict[str, Any]] = []

        def on_epoch(rec: dict[str, Any], epochs=epochs) -> None:
            epochs.append({"epoch": rec["epoch"], "seconds": rec["epoch_seconds"], "ops": rec["surviving_ops"],
                           "val_dice": rec["val_dice"]})
            clock.check()

        run: dict[str, Any] = {"epochs": epochs}
        out["runs"][method] = run
        try:
            result = run_search(cfg, copy.deepcopy(unet), cohort, policy, progress=False, on_epoch=on_epoch)
            run.update(genotype=str(result.genotype), search_seconds=result.search_seconds,
                       stopped_early=result.stopped_early, events=len(result.pruning_log))
        except TimeUp as err:
            run["stopped"] = str(err)
        # Before pruning: epochs that end with every operation; after: epochs that start pruned.
        full_ops = len(cfg.ops) * len(SearchSpace.from_config(cfg).edges())
        run["epoch_seconds_all_ops"] = [e["seconds"] for e in epochs if e["ops"] == full_ops]
        run["epoch_seconds_pruned"] = [e["seconds"] for prev, e in zip(epochs, epochs[1:]) if prev["ops"] < full_ops]
    return out


# Report ---------------------------------------------------------------------------


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if math.isfinite(v) else str(v)
    return str(v)


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (one block per finished section)."""
    lines = [f"# GPU suite ({report['mode']})", "", f"Started {report['started']}; "
             f"{report.get('elapsed_s', 0):.0f} s of a {report['budget_s']:.0f} s budget.", ""]
    sec = report["sections"]
    for name, entry in sec.items():
        lines += [f"## {name}: {entry['status']} ({entry.get('seconds', 0):.1f} s)", ""]
        if entry.get("error"):
            lines += ["```", entry["error"], "```", ""]
        res = entry.get("result") or {}
        if name == "device":
            lines += ["| fact | value |", "|---|---|"] + [f"| {k} | {_fmt(v, 6)} |" for k, v in res.items()] + [""]
        elif name == "steps" and res.get("rows"):
            lines += ["| px | precision | model | ms/step | x plain | peak MiB | x plain |", "|---:|---|---|---:|---:|---:|---:|"]
            for r in res["rows"]:
                lines.append(f"| {r['size']} | {r['precision']} | {r['model']} | {_fmt(r.get('ms'))} | "
                             f"{_fmt(r.get('x_plain_time'), 2)} | {_fmt(r.get('peak_mib'))} | "
                             f"{_fmt(r.get('x_plain_memory'), 2)} |" + (f" {r['error']}" if r.get("error") else ""))
            lines.append("")
        elif name == "arch_grad" and res.get("rows"):
            lines += ["| variant | entries | exact zeros | relative error | cosine | max abs |", "|---|---:|---:|---:|---:|---:|"]
            for r in res["rows"]:
                lines.append(f"| {r['variant']} | {_fmt(r.get('n'))} | {_fmt(r.get('zeros'))} | "
                             f"{_fmt(r.get('rel_error'), 4)} | {_fmt(r.get('cosine'), 5)} | {_fmt(r.get('max_abs'), 6)} |"
                             + (f" {r['error']}" if r.get("error") else ""))
            lines.append("")
        elif name == "determinism" and res:
            keys = ("strict", "equal_genotypes", "equal_arch_weights", "max_arch_difference", "genotype_1",
                    "genotype_2", "strict_error", "nondeterministic_ops")
            lines += ["| check | value |", "|---|---|"] + [f"| {k} | {_fmt(res.get(k), 3)} |" for k in keys] + [""]
        elif name == "search" and res.get("runs"):
            lines += ["| method | epochs | s/epoch, all ops (median) | s/epoch, after pruning (median) | events | genotype |", "|---|---:|---:|---:|---:|---|"]
            for method, r in res["runs"].items():
                before = r.get("epoch_seconds_all_ops") or []
                after = r.get("epoch_seconds_pruned") or []
                lines.append(f"| {method} | {len(r['epochs'])} | {_fmt(statistics.median(before), 2) if before else '–'} | "
                             f"{_fmt(statistics.median(after), 2) if after else '–'} | {_fmt(r.get('events'))} | "
                             f"{r.get('genotype', r.get('stopped', ''))} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], out: Path) -> None:
    report["elapsed_s"] = report["_clock"].elapsed()
    data = {k: v for k, v in report.items() if not k.startswith("_")}
    atomic_write_text(out / JSON_NAME, json.dumps(data, indent=2, default=str))
    atomic_write_text(out / MD_NAME, markdown(data))


def run_section(report: dict[str, Any], name: str, fn: Callable[[dict[str, Any]], Any], out: Path,
                share: float) -> None:
    """Run one section in its time box, record its result (what it finished, if stopped) or error, and write.

    ``fn(result)`` fills ``result`` as it goes, so a section stopped by its
    time box still reports what it measured. The time box is ``share`` of
    the budget left (time a section leaves unused goes to the later ones).
    """
    clock: Clock = report["_clock"]
    clock.open(share * (clock.end - time.perf_counter()))
    t0 = time.perf_counter()
    entry: dict[str, Any] = {"status": "running", "result": {}}
    report["sections"][name] = entry
    try:
        clock.check(1.0)
        fn(entry["result"])
        entry["status"] = "ok"
    except TimeUp as err:
        entry.update(status="time box reached", error=str(err))
    except Exception as err:  # noqa: BLE001 - a failing section is a finding; the next sections still run
        entry.update(status="failed", error="".join(traceback.format_exception_only(type(err), err)).strip()[:2000])
    entry["seconds"] = time.perf_counter() - t0
    write(report, out)
    print(f"[{clock.elapsed():6.1f} s] {name}: {entry['status']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/gpu_suite"), help="folder for the JSON and Markdown")
    parser.add_argument("--device", default="cuda", help="the device to test (default cuda)")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny settings on CPU (checks the script, not the GPU)")
    parser.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default 360; smoke 240)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these sections")
    args = parser.parse_args(argv)
    settings = SMOKE if args.cpu_smoke else FULL
    if args.budget is not None:
        settings = Settings(**{**settings.__dict__, "budget_s": args.budget})
    device = torch.device("cpu" if args.cpu_smoke else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available (use --cpu-smoke to check the script on CPU)",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"mode": "cpu-smoke" if args.cpu_smoke else "gpu", "started": time.strftime(
        "%Y-%m-%d %H:%M:%S %Z"), "budget_s": settings.budget_s, "settings": settings.__dict__, "sections": {},
        "_clock": Clock(settings.budget_s), "_settings": settings}
    cohort = MemoryCohort(settings.patients, settings.val_patients, settings.slices, settings.cohort_size)
    clock = report["_clock"]
    sections: dict[str, Callable[[dict[str, Any]], Any]] = {
        "device": lambda res: section_device(settings, device, clock, res),
        "steps": lambda res: section_steps(settings, device, clock, res),
        "arch_grad": lambda res: section_arch_grad(settings, device, clock, cohort, res),
        "determinism": lambda res: section_determinism(settings, device, clock, res),
        "search": lambda res: section_search(settings, device, clock, cohort, res),
    }
    unknown = set(args.only or ()) - set(sections)
    if unknown:
        print(f"error: --only: unknown sections {sorted(unknown)}; choose among {list(sections)}", file=sys.stderr)
        return 2
    todo = [name for name in sections if args.only is None or name in args.only]
    for pos, name in enumerate(todo):
        weights = [settings.boxes[n] for n in todo[pos:]]
        run_section(report, name, sections[name], args.out, share=weights[0] / sum(weights))
    print(f"wrote {args.out / JSON_NAME} and {args.out / MD_NAME}")
    return 0 if all(e["status"] != "failed" for e in report["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
