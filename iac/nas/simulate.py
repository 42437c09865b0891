"""Decision quality of the stability criteria on simulated edges.

One edge of the default search space (the eight DARTS operations, ``none``
included) is searched many times at once: its logits are a torch
``nn.Parameter`` of shape ``(runs, n_ops)`` stepped by ``torch.optim.Adam``
with the project's architecture settings (:class:`iac.config.SearchConfig`:
learning rate, betas, weight decay; Adam acts element-wise, so each row is
an independent search). Every ``check_every`` steps each run's edge goes
through the real policy, :class:`iac.nas.pruning.JSStabilityPruning` on a
one-edge space, exactly as the search loop calls it; its cuts mask the
pruned operations out of that run's softmax (the survivors keep their
logits and Adam state, as :func:`iac.nas.pruning.apply_events` does).

Gradients (:class:`MeritSource`): an operation ``i`` helps the loss by its
*merit* ``m_i``; per step ``dL/dp_i = -scale * (m_i + eps_i)`` with unit
noise ``eps`` (optionally AR(1) in time), and the logits get the softmax
Jacobian of that over the survivors. Merits are in units of the noise, so
the signal-to-noise ratio of a scenario is (best - second-best merit) / 1.
:class:`LiveSource` instead replays per-check alpha-gradient means and
variances recorded by a live search (``grad_mean`` / ``grad_var`` of each
edge of a trajectory's checks).

All arms of one seed see the same noise (common random numbers): the
``full`` arm (no pruning) gives the full-budget argmax each criterion is
compared with.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from iac.config import DARTS_OPS, SearchConfig, StabilityConfig
from iac.nas.genotype import SearchSpace
from iac.nas.pruning import JSStabilityPruning
from iac.nas.stability import NONE_OP, top_k_ops
from iac.nas.supernet import ARCH_INIT_SCALE

__all__ = [
    "SIM_SPACE",
    "LIVE_SCALE",
    "SimSettings",
    "Scenario",
    "MeritSource",
    "LiveSource",
    "ArmResult",
    "Targets",
    "simulate_arm",
    "run_block",
    "summarise",
    "check_targets",
    "choose",
    "default_scenarios",
    "live_edges",
]

# One edge 0 -> 1 of the eight DARTS operations; its node keeps its only input.
SIM_SPACE = SearchSpace(ops=DARTS_OPS, nodes=1, n_inputs=1, steps_per_node=1)
_SEARCH = SearchConfig()
# Quantile of the decision step reported next to the median.
HIGH_QUANTILE = 0.9


@dataclass(frozen=True)
class SimSettings:
    """Budget, cadence and optimiser of the simulated searches.

    Attributes:
        budget: Architecture steps of the full search (the default 2400 is 48
            checks at ``check_every = 50``, the issue's measurement).
        check_every: Architecture steps between checks.
        runs: Runs (edges) per seed block.
        noise_scale: Per-step gradient-noise standard deviation of one
            operation, ``dL/dp`` units (merits scale with it: the SNR is fixed).
        arch_lr: Adam learning rate (the project's).
        arch_betas: Adam betas (the project's).
        arch_weight_decay: Adam weight decay (the project's).
    """

    budget: int = 2400
    check_every: int = 50
    runs: int = 40
    noise_scale: float = 1.0
    arch_lr: float = _SEARCH.arch_lr
    arch_betas: tuple[float, float] = _SEARCH.arch_betas
    arch_weight_decay: float = _SEARCH.arch_weight_decay


@dataclass(frozen=True)
class Scenario:
    """Merits of the operations of one simulated edge.

    Attributes:
        name: Row label.
        merits: Per operation of :data:`SIM_SPACE` (canonical order), in
            units of the per-step noise standard deviation.
        late_merits: Merits from ``switch_at`` of the budget on (``None``: no
            change), e.g. an operation overtaken by another.
        switch_at: Fraction of the budget where ``late_merits`` take over.
        ar: AR(1) correlation of the per-step noise, in [0, 1).
        scale: Multiplies ``SimSettings.noise_scale`` (gradient scale at the
            same SNR).
        snr: The SNR of a plain signal scenario (one best operation, white
            noise, unit scale): the rows whose decision time must rise as it falls.
    """

    name: str
    merits: tuple[float, ...]
    late_merits: tuple[float, ...] | None = None
    switch_at: float = 1.0
    ar: float = 0.0
    scale: float = 1.0
    snr: float | None = None

    def __post_init__(self) -> None:
        for merits in (self.merits, self.late_merits):
            if merits is not None and len(merits) != len(SIM_SPACE.ops):
                raise ValueError(f"scenario {self.name!r}: {len(merits)} merits for {len(SIM_SPACE.ops)} operations")
        if not 0.0 <= self.ar < 1.0:
            raise ValueError(f"scenario {self.name!r}: ar must be in [0, 1), got {self.ar}")

    @property
    def best(self) -> int:
        """Index of the truly best non-``none`` operation (by the merits that hold at the end)."""
        final = self.late_merits if self.late_merits is not None else self.merits
        return _best_real(np.asarray(final, dtype=np.float64))


def _best_real(merits: np.ndarray) -> int:
    """Index of the largest merit among non-``none`` operations (first on ties)."""
    real = np.array([op != NONE_OP for op in SIM_SPACE.ops])
    return int(np.argmax(np.where(real, merits, -np.inf)))


def _merit_vector(best: float, second: float | None = None) -> tuple[float, ...]:
    """Merits: ``best`` on ``sep_conv_3x3``, ``second`` on ``dil_conv_3x3``, 0 elsewhere."""
    m = [0.0] * len(SIM_SPACE.ops)
    m[SIM_SPACE.ops.index("sep_conv_3x3")] = best
    if second is not None:
        m[SIM_SPACE.ops.index("dil_conv_3x3")] = second
    return tuple(m)


# Gradient scale (noise std of dL/dp) at which one alpha's gradient noise is about 1e-4, as measured on
# the final checkpoints of live searches (alpha gradients ~1e-4, the weight decay about half the loss
# gradient): the architecture weight decay then holds the logits near uniform (mean-reverting logits).
LIVE_SCALE = 8e-4


def default_scenarios() -> list[Scenario]:
    """The scenarios of the decision-quality benchmark (merits in noise units)."""
    zero = _merit_vector(0.0)
    early = [0.0] * len(SIM_SPACE.ops)
    early[SIM_SPACE.ops.index("skip_connect")] = 0.1  # parameter-free operation leading early
    late = list(early)
    late[SIM_SPACE.ops.index("sep_conv_3x3")] = 0.2
    return [
        Scenario("pure noise", zero),
        *(Scenario(f"SNR {snr:g}", _merit_vector(snr), snr=snr) for snr in (0.02, 0.05, 0.1, 0.2)),
        Scenario("near-equal best two (0.2 / 0.19)", _merit_vector(0.2, 0.19)),
        Scenario("AR(1) 0.5, SNR 0.1", _merit_vector(0.1), ar=0.5),
        Scenario("AR(1) 0.9, SNR 0.1", _merit_vector(0.1), ar=0.9),
        Scenario("overtaken at 30 % (skip 0.1, then sep 0.2)", tuple(early), tuple(late), switch_at=0.3),
        Scenario("weight-decay bound: pure noise", zero, scale=LIVE_SCALE),
        Scenario("weight-decay bound: SNR 0.2", _merit_vector(0.2), scale=LIVE_SCALE),
        Scenario("weight-decay bound: SNR 0.5", _merit_vector(0.5), scale=LIVE_SCALE),
    ]


class _Noise:
    """Unit Gaussian noise per step and operation, optionally AR(1) in time (same stream for every arm)."""

    def __init__(self, seed: int, shape: tuple[int, int], ar: float) -> None:
        self.rng, self.shape, self.ar = np.random.default_rng(seed), shape, ar
        self.state: np.ndarray | None = None

    def next(self) -> np.ndarray:
        """The next step's noise, shape ``(runs, n_ops)``, unit variance."""
        fresh = self.rng.standard_normal(self.shape)
        if self.state is None or self.ar == 0.0:
            self.state = fresh
        else:
            self.state = self.ar * self.state + np.sqrt(1.0 - self.ar**2) * fresh
        return self.state


class MeritSource:
    """Gradients of a :class:`Scenario`: softmax Jacobian times (merits + noise) over the survivors.

    Args:
        scenario: The merits.
        settings: Budget and noise scale.
        runs: Rows.
        seed: Seed of the noise stream.
    """

    def __init__(self, scenario: Scenario, settings: SimSettings, runs: int, seed: int) -> None:
        self.scenario, self.runs = scenario, runs
        self.scale = settings.noise_scale * scenario.scale
        self.switch = round(scenario.switch_at * settings.budget)
        self.noise = _Noise(seed, (runs, len(SIM_SPACE.ops)), scenario.ar)
        self.best = np.full(runs, scenario.best)

    def grad(self, step: int, probs: torch.Tensor) -> torch.Tensor:
        """``dL/dalpha`` of every row at ``step`` (1-based); ``probs`` is 0 on pruned operations."""
        sc = self.scenario
        merits = sc.late_merits if sc.late_merits is not None and step > self.switch else sc.merits
        u = torch.as_tensor(self.scale * (np.asarray(merits) + self.noise.next()), dtype=probs.dtype)
        # dL/dp = -u; through the softmax: dL/dalpha_i = -p_i (u_i - sum_j p_j u_j)
        return -probs * (u - (probs * u).sum(dim=1, keepdim=True))


class LiveSource:
    """Alpha gradients replayed from a live search: per check interval, mean + sqrt(var) * noise.

    Args:
        edges: Per edge ``(steps, mean, var)``: the architecture step of each
            check (C,), and the alpha-gradient mean and variance over the
            steps up to it (C, n_ops) in :data:`SIM_SPACE` order.
        repeats: Runs per edge (rows are edge-major).
        seed: Seed of the noise stream.
    """

    def __init__(self, edges: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], repeats: int, seed: int) -> None:
        self.steps = edges[0][0]
        self.mean = np.repeat(np.stack([e[1] for e in edges]), repeats, axis=0)  # (R, C, n_ops)
        self.std = np.sqrt(np.repeat(np.stack([e[2] for e in edges]), repeats, axis=0))
        self.runs = self.mean.shape[0]
        self.noise = _Noise(seed, (self.runs, len(SIM_SPACE.ops)), 0.0)
        total = self.mean.sum(axis=1)  # the op the mean gradient pushes up most is the truly best
        self.best = np.array([_best_real(-row) for row in total])

    def grad(self, step: int, probs: torch.Tensor) -> torch.Tensor:
        """``dL/dalpha`` of every row at ``step``; zero on pruned operations."""
        c = min(int(np.searchsorted(self.steps, step)), len(self.steps) - 1)
        g = self.mean[:, c] + self.std[:, c] * self.noise.next()
        return torch.as_tensor(g, dtype=probs.dtype) * (probs > 0)


def live_edges(trajectory: Mapping[str, Any]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per edge of a trajectory whose checks carry ``grad_mean`` / ``grad_var``: ``(steps, mean, var)``.

    Operations missing from a later check (pruned in a live LTH search) keep
    their last recorded values. Edges without the fields are left out.

    Args:
        trajectory: A loaded trajectory (:func:`iac.nas.trajectory.load_trajectory`).

    Returns:
        One entry per (architecture, edge) with gradient statistics at every check.

    Raises:
        ValueError: If the search's operations are not :data:`SIM_SPACE`'s.
    """
    ops = tuple(trajectory.get("space", {}).get("ops", SIM_SPACE.ops))
    if ops != SIM_SPACE.ops:
        raise ValueError(f"live noise needs a search of the default operations {list(SIM_SPACE.ops)}, not {list(ops)}")
    checks = trajectory["checks"]
    steps = np.array([c["arch_step"] for c in checks], dtype=np.int64)
    out = []
    for a, arch in enumerate(checks[0]["archs"]):
        for e in range(len(arch["edges"])):
            stats = _edge_stats([c["archs"][a]["edges"][e] for c in checks])
            if stats is not None:
                out.append((steps, *stats))
    return out


def _edge_stats(records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray] | None:
    """One edge's per-check gradient mean and variance, (checks, n_ops) each; ``None`` without them."""
    n = len(SIM_SPACE.ops)
    mean, var = np.zeros((len(records), n)), np.zeros((len(records), n))
    for c, rec in enumerate(records):
        if "grad_mean" not in rec or "grad_var" not in rec:
            return None
        if c:
            mean[c], var[c] = mean[c - 1], var[c - 1]
        for op, m, v in zip(rec["ops"], rec["grad_mean"], rec["grad_var"]):
            i = SIM_SPACE.ops.index(op)
            mean[c, i], var[c, i] = m, v
    return mean, var


@dataclass(frozen=True)
class ArmResult:
    """Per run of one arm: the final operation, when the edge was decided, and how.

    Attributes:
        final: Index (in :data:`SIM_SPACE` order) of the operation the edge
            ends with: its last survivor, or the argmax of its survivors
            (``none`` excluded) at the budget when undecided.
        step: Architecture step of the check that decided it (the budget when undecided).
        no_preference: The deciding cut was flagged "no preference".
        best: The truly best operation.
        trace: The argmax (``none`` excluded) at every check, shape
            ``(checks, runs)``: the full search stopped there (unpruned arm only).
    """

    final: np.ndarray
    step: np.ndarray
    no_preference: np.ndarray
    best: np.ndarray
    trace: np.ndarray | None = None


def _masked_softmax(logits: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """Softmax over each row's surviving operations (0 elsewhere), float64."""
    return torch.softmax(logits.detach().double().masked_fill(~alive, float("-inf")), dim=1)


def _argmax_real(probs: np.ndarray) -> np.ndarray:
    """Per row, the index of the most probable non-``none`` operation (ties: canonical order)."""
    return np.array([SIM_SPACE.ops.index(top_k_ops(SIM_SPACE.ops, row, 1)[0]) for row in probs])


def _check_record(check: int, step: int, ops: Sequence[str], probs: Sequence[float]) -> dict[str, Any]:
    """A one-edge check record as the search loop writes it."""
    edge = {"edge": "0->1", "ops": list(ops), "alpha": [float(p) for p in probs], "beta": 1.0, "alive": True}
    return {"check": check, "epoch": 0, "arch_step": step, "archs": [{"edges": [edge]}]}


def _observe(policies, out: dict[str, np.ndarray], alive: torch.Tensor, probs: torch.Tensor, check: int, step: int):
    """One check of every undecided run: the policy decides, its cuts become masks."""
    ops_all = SIM_SPACE.ops
    for r, policy in enumerate(policies):
        if out["step"][r] >= 0:
            continue
        idx = alive[r].nonzero().flatten().tolist()
        events = policy.observe(_check_record(check, step, [ops_all[i] for i in idx], probs[r, idx].tolist()))
        for ev in events:
            keep = set(ev.kept)
            alive[r] = torch.tensor([op in keep for op in ops_all])
        if policy.decided(0, 0):
            out["step"][r] = step
            out["no_pref"][r] = bool(policy.last_status["a0/0->1"].no_preference)


def simulate_arm(source, settings: SimSettings, cfg: StabilityConfig | None, seed: int) -> ArmResult:
    """Runs every row of ``source`` for the budget, pruned by ``cfg``'s policy (``None``: the full search).

    Args:
        source: A :class:`MeritSource` or :class:`LiveSource` (fresh: its noise stream is consumed).
        settings: Budget, cadence and optimiser.
        cfg: Stability settings of the policy, or ``None`` for no pruning.
        seed: Seed of the initial logits (``ARCH_INIT_SCALE * N(0, 1)``, as the supernet).

    Returns:
        The arm's :class:`ArmResult` (with the argmax trace when unpruned).
    """
    with _one_thread():
        return _simulate_arm(source, settings, cfg, seed)


@contextlib.contextmanager
def _one_thread():
    """Torch on one thread meanwhile: on (runs, 8) tensors more threads only add overhead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _simulate_arm(source, settings: SimSettings, cfg: StabilityConfig | None, seed: int) -> ArmResult:
    runs, n_ops = source.runs, len(SIM_SPACE.ops)
    init = ARCH_INIT_SCALE * np.random.default_rng(seed).standard_normal((runs, n_ops))
    logits = torch.nn.Parameter(torch.tensor(init, dtype=torch.float32))
    opt = torch.optim.Adam([logits], lr=settings.arch_lr, betas=tuple(settings.arch_betas),
                           weight_decay=settings.arch_weight_decay)
    alive = torch.ones(runs, n_ops, dtype=torch.bool)
    policies = [JSStabilityPruning(SIM_SPACE, cfg) for _ in range(runs)] if cfg is not None else []
    out = {"step": np.full(runs, -1), "no_pref": np.zeros(runs, dtype=bool)}
    trace = []
    for step in range(1, settings.budget + 1):
        logits.grad = source.grad(step, _masked_softmax(logits, alive)).float()
        opt.step()
        if step % settings.check_every:
            continue
        probs = _masked_softmax(logits, alive)
        if policies:
            _observe(policies, out, alive, probs, step // settings.check_every, step)
        else:
            trace.append(_argmax_real(probs.numpy()))
    final = _argmax_real(_masked_softmax(logits, alive).numpy())
    step = np.where(out["step"] < 0, settings.budget, out["step"])
    return ArmResult(final=final, step=step, no_preference=out["no_pref"], best=np.asarray(source.best),
                     trace=None if policies else np.stack(trace))


def run_block(make_source, settings: SimSettings, cfgs: Mapping[str, StabilityConfig], seed: int) -> dict[str, Any]:
    """One seed block: the full arm and every criterion's arm on the same noise.

    Args:
        make_source: ``make_source(seed) -> source`` (a fresh noise stream per arm).
        settings: Budget, cadence and optimiser.
        cfgs: Criterion name -> stability settings.
        seed: Seed of the block (noise and initial logits).

    Returns:
        ``{"argmax", "best", "trace_correct", "arms": {name: {"final", "step", "no_preference"}}}``
        as plain lists (JSON-able); ``trace_correct[c]`` is how many runs' argmax
        at check ``c + 1`` is the truly best operation.
    """
    full = simulate_arm(make_source(seed), settings, None, seed)
    block = {"argmax": full.final.tolist(), "best": full.best.tolist(),
             "trace_correct": [int(n) for n in (full.trace == full.best).sum(axis=1)], "arms": {}}
    for name, cfg in cfgs.items():
        arm = simulate_arm(make_source(seed), settings, cfg, seed)
        block["arms"][name] = {"final": arm.final.tolist(), "step": arm.step.tolist(),
                               "no_preference": arm.no_preference.tolist()}
    return block


def _arm_metrics(arm: Mapping[str, Sequence], argmax: np.ndarray, best: np.ndarray, budget: int) -> dict[str, float]:
    """Correctness, agreement, decision quantiles, saving and no-preference rate of one arm's runs (%, steps)."""
    final, step = np.asarray(arm["final"]), np.asarray(arm["step"], dtype=np.float64)
    return {
        "correct": 100.0 * float(np.mean(final == best)),
        "agree": 100.0 * float(np.mean(final == argmax)),
        "median_step": float(np.median(step)),
        "p90_step": float(np.quantile(step, HIGH_QUANTILE)),
        "saving": 100.0 * float(np.mean(1.0 - step / budget)),
        "no_preference": 100.0 * float(np.mean(np.asarray(arm["no_preference"]) & (step < budget))),
    }


def _argmax_metrics(block: Mapping[str, Any], early: int) -> dict[str, float]:
    """The full search's accuracy at the budget and when stopped at check ``early``."""
    runs = len(block["best"])
    return {
        "correct": 100.0 * float(np.mean(np.asarray(block["argmax"]) == np.asarray(block["best"]))),
        "correct_early": 100.0 * block["trace_correct"][early - 1] / runs,
    }


def summarise(blocks: Iterable[Mapping[str, Any]], settings: SimSettings, early_fraction: float) -> dict[str, dict[str, float]]:
    """Metrics per arm over the runs of all blocks, with their seed-to-seed spread.

    Args:
        blocks: :func:`run_block` outputs of one scenario and settings.
        settings: Their budget and cadence.
        early_fraction: Fraction of the budget at which the full search's
            accuracy is also reported (``argmax`` ``correct_early``).

    Returns:
        ``{"argmax": {"correct", "correct_early", ...}, name: {metric, ...}}``:
        each metric pooled over all runs, ``metric + "_sd"`` its standard
        deviation across blocks (the seed-to-seed spread of one block's value),
        and ``argmax`` ``curve``: the full search's accuracy at every check.
    """
    blocks = list(blocks)
    early = max(1, round(early_fraction * settings.budget / settings.check_every))
    names = list(blocks[0]["arms"])
    argmax = np.concatenate([b["argmax"] for b in blocks])
    best = np.concatenate([b["best"] for b in blocks])
    out: dict[str, dict[str, Any]] = {"argmax": _argmax_metrics(
        {"argmax": argmax, "best": best, "trace_correct": np.sum([b["trace_correct"] for b in blocks], axis=0)}, early)}
    out["argmax"]["curve"] = (100.0 * np.sum([b["trace_correct"] for b in blocks], axis=0) / best.size).tolist()
    per_block = {"argmax": [_argmax_metrics(b, early) for b in blocks]}
    for name in names:
        pooled = {key: np.concatenate([b["arms"][name][key] for b in blocks]) for key in ("final", "step", "no_preference")}
        out[name] = _arm_metrics(pooled, argmax, best, settings.budget)
        per_block[name] = [_arm_metrics(b["arms"][name], np.asarray(b["argmax"]), np.asarray(b["best"]), settings.budget)
                           for b in blocks]
    for name, rows in per_block.items():
        for metric in rows[0]:
            out[name][metric + "_sd"] = float(np.std([r[metric] for r in rows], ddof=1)) if len(rows) > 1 else 0.0
    return out


@dataclass(frozen=True)
class Targets:
    """What a criterion must achieve on the simulator (the decision-quality targets).

    Attributes:
        floor: Where the full-budget argmax is correct at least this often (%) ...
        margin: ... the criterion's final operation is correct at least as
            often as the argmax minus this many points.
        perfect: Where the argmax is correct this often (%) ...
        early_fraction: ... the criterion's median decision falls within this
            fraction of the budget.
    """

    floor: float = 90.0
    margin: float = 5.0
    perfect: float = 100.0
    early_fraction: float = 0.25


def check_targets(
    summaries: Mapping[str, Mapping[str, Mapping[str, float]]],
    scenarios: Sequence[Scenario],
    name: str,
    budget: int,
    targets: Targets = Targets(),
) -> list[dict[str, Any]]:
    """Each target of criterion ``name``, per scenario: the value, its limit, and whether it is met.

    Targets: ``correct`` (where the argmax is at least ``floor`` % correct,
    the criterion is at most ``margin`` points below it), ``early`` (where
    the argmax is ``perfect``, the median decision is at most
    ``early_fraction`` of the budget), ``rises`` (over the plain SNR
    scenarios, the median decision does not fall as the SNR falls).

    Args:
        summaries: Scenario name -> :func:`summarise` output.
        scenarios: The scenarios, in table order.
        name: The criterion's arm name.
        budget: Architecture steps of the full search.
        targets: The limits.

    Returns:
        Rows ``{"target", "scenario", "value", "limit", "met"}``.
    """
    rows = []
    for sc in scenarios:
        s = summaries[sc.name]
        argmax, arm = s["argmax"]["correct"], s[name]
        if argmax >= targets.floor:
            limit = argmax - targets.margin
            rows.append({"target": "correct", "scenario": sc.name, "value": arm["correct"], "limit": limit,
                         "met": arm["correct"] >= limit})
        if argmax >= targets.perfect:
            limit = targets.early_fraction * budget
            rows.append({"target": "early", "scenario": sc.name, "value": arm["median_step"], "limit": limit,
                         "met": arm["median_step"] <= limit})
    plain = sorted((sc for sc in scenarios if sc.snr is not None), key=lambda sc: -sc.snr)
    for strong, weak in zip(plain, plain[1:]):
        before, after = summaries[strong.name][name]["median_step"], summaries[weak.name][name]["median_step"]
        rows.append({"target": "rises", "scenario": f"{strong.name} -> {weak.name}", "value": after - before,
                     "limit": 0.0, "met": after >= before})
    return rows


def choose(candidates: Mapping[str, Sequence[Mapping[str, Any]]], savings: Mapping[str, float]) -> str:
    """The candidate that misses the fewest correctness targets, then the fewest others, then saves the most.

    Correctness comes first: the decisions must be the ones the full search
    would make; speed and the shape of the decision times come after.

    Args:
        candidates: Candidate name -> its :func:`check_targets` rows.
        savings: Candidate name -> its mean saving (% of the budget) over the scenarios.

    Returns:
        The chosen name (ties: the first in ``candidates``).
    """
    def key(item):
        name, rows = item
        missed_correct = sum(not r["met"] for r in rows if r["target"] == "correct")
        return (missed_correct, sum(not r["met"] for r in rows) - missed_correct, -savings[name])

    return min(candidates.items(), key=key)[0]
