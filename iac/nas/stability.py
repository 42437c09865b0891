"""Stability of operation-importance distributions (the IAC-LTH criterion).

:func:`js_divergence` is the pure criterion: the Jensen–Shannon divergence
between two discrete distributions. :class:`StabilityTest` is the small
stateful part: per edge (or any other keyed distribution) it remembers the
last ``window`` distributions and counts how many consecutive checks the
divergence stayed under ``tau`` while the top-k set did not change.

What a check is belongs to the caller: the search checks every fixed number
of *architecture steps* (``SearchConfig.check_every``), not every epoch.
With Adam, an architecture weight moves by about the learning rate per step
whatever its gradient, so the divergence between two checks grows with the
number of steps between them; counting steps keeps ``tau`` meaning the same
thing for any dataset size. Near a uniform distribution the divergence of a
full-speed move is still tiny, which is why the top-k set must also hold
still before an edge counts as stable.

The JS test measures movement, not preference: an edge whose gradient is
mostly noise moves well below Adam's full speed and passes it. The adaptive
criterion (:class:`SequentialMarginTest`, ``criterion="sequential"``) tests
the preference itself. For a pair of operations ``(i, j)`` the margin
``S = log p_i - log p_j`` (invariant to a common shift of the logits, so
unchanged by renormalising over survivors) is the sum of its increments
between checks since the uniform start; :class:`MarginEvidence` keeps, per
key, those sums and their centred sum of squares ``V`` (the margin's
estimated variance). With ``V`` as the clock, two boundaries decide:

* *shown worse*: ``S >= mixture_bound(V)`` (Robbins' normal mixture, a
  confidence sequence: a pair without preference ever crosses it, at any
  of the checks, with probability at most ``seq_error``);
* *no preference*: ``|S| <= indifference_bound(V)`` (the lower boundary of
  Wald's SPRT of no drift against a drift of ``seq_effect`` per unit of
  variance, missing such a drift with probability ``seq_miss``): pairs
  drifting below about half of ``seq_effect`` end here; pure noise does,
  after a variance of about ``2 log(1 / seq_miss) / seq_effect**2``.

Both are functions of ``(S, V)`` only, and both grow with the number of
architecture steps the same way whatever the cadence, the dataset size or
the gradient scale (Adam normalises it), so the two parameters mean the
same on any of them.

:func:`make_stability_test` builds the test a :class:`iac.config.StabilityConfig`
asks for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
from scipy.special import rel_entr

if TYPE_CHECKING:
    from iac.config import StabilityConfig

# Name of the zero operation: it never counts toward an edge's top-k
# (discretisation ignores it).
NONE_OP = "none"
# Verdicts of :meth:`MarginEvidence.verdicts` on an operation against the leader.
WORSE, INDIFFERENT, OPEN = "worse", "indifferent", "open"
# A pair's increment variance needs two increments to be estimated at all.
MIN_INCREMENTS = 2


def _as_distribution(x: Any, name: str) -> np.ndarray:
    """Validates a 1-D non-negative vector and scales it to sum 1."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of probabilities, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must hold finite, non-negative values, got {arr.tolist()}")
    total = arr.sum()
    if total <= 0:
        raise ValueError(f"{name} must have a positive sum, got {arr.tolist()}")
    return arr / total


def js_divergence(p: Sequence[float], q: Sequence[float], base: float = 2) -> float:
    """Jensen–Shannon divergence between two discrete distributions.

    Inputs are scaled to sum 1 (as :func:`scipy.spatial.distance.jensenshannon`
    does); zero entries are handled with ``0 * log 0 = 0``. The result equals
    ``jensenshannon(p, q, base=base) ** 2``, is symmetric, exactly ``0.0`` for
    equal inputs and lies in ``[0, log_base(2)]`` (``[0, 1]`` for base 2).

    Args:
        p: First distribution (non-negative, positive sum).
        q: Second distribution, same length as ``p``.
        base: Logarithm base (> 1).

    Returns:
        The divergence as a Python float.

    Raises:
        ValueError: If the inputs are not valid distributions of equal length,
            or ``base`` is not greater than 1.
    """
    if not base > 1:
        raise ValueError(f"base must be greater than 1, got {base}")
    pa = _as_distribution(p, "p")
    qa = _as_distribution(q, "q")
    if pa.shape != qa.shape:
        raise ValueError(f"p and q must have the same length, got {pa.size} and {qa.size}")
    if np.array_equal(pa, qa):
        return 0.0
    m = 0.5 * (pa + qa)
    nats = 0.5 * (rel_entr(pa, m).sum() + rel_entr(qa, m).sum())
    upper = np.log(2.0) / np.log(base)
    # Rounding can leave a hair below 0 or above the bound.
    return float(min(max(nats / np.log(base), 0.0), upper))


def full_speed_js(arch_lr: float, steps: int, n_ops: int) -> float:
    """JS divergence an edge reaches when its logits move at Adam's full speed.

    With Adam every logit moves by about ``arch_lr`` per architecture step
    whatever the gradient's size, so over ``steps`` steps a uniform
    distribution whose logits move apart (half up, half down) by
    ``arch_lr * steps`` is about the largest change a check can see. A
    ``tau`` at or above this value never binds; below it, ``tau / full_speed_js``
    is the fraction of full-speed movement an edge may still show when stable.

    Args:
        arch_lr: Architecture learning rate (Adam).
        steps: Architecture steps between the compared distributions
            (``check_every * window``).
        n_ops: Operations on the edge.

    Returns:
        The divergence in bits.
    """
    if n_ops < 2:
        return 0.0
    shift = np.where(np.arange(n_ops) % 2 == 0, 1.0, -1.0) * arch_lr * steps
    q = np.exp(shift - shift.max())
    return js_divergence(np.full(n_ops, 1.0 / n_ops), q / q.sum())


def top_k_ops(ops: Sequence[str], probs: Sequence[float], k: int) -> tuple[str, ...]:
    """The ``k`` most probable operations, ``none`` excluded.

    Ties break by position in ``ops`` (the canonical operation order).

    Args:
        ops: Operation names.
        probs: Their probabilities, same length.
        k: How many to return (fewer if fewer non-``none`` ops exist).

    Returns:
        The names, most probable first.
    """
    if len(ops) != len(probs):
        raise ValueError(f"ops and probs must have the same length, got {len(ops)} and {len(probs)}")
    order = sorted(
        (i for i, op in enumerate(ops) if op != NONE_OP),
        key=lambda i: (-float(probs[i]), i),
    )
    return tuple(ops[i] for i in order[:k])


def _update_args(edge_key: str, ops: Sequence[str], probs: Sequence[float], k: int) -> tuple[int, tuple[str, ...], np.ndarray]:
    """Validated arguments of an ``update``: the top-k size, the names, the distribution."""
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ops = tuple(str(o) for o in ops)
    p = _as_distribution(probs, f"probs of {edge_key!r}")
    if len(ops) != p.size:
        raise ValueError(f"{edge_key!r}: {len(ops)} ops but {p.size} probabilities")
    return k, ops, p


@dataclass(frozen=True)
class EdgeStatus:
    """Outcome of one :meth:`StabilityTest.update`.

    Attributes:
        key: The edge (or node) key.
        js: Divergence from the distribution ``window`` checks earlier;
            ``None`` while fewer than ``window`` earlier checks exist.
        stable: Whether the key may be cut to ``top`` now (JS: ``count >=
            patience``; sequential: every operation outside ``top`` is shown
            worse than the leader or shows no preference).
        count: JS: consecutive checks with ``js < tau`` and the top-k set
            unchanged; sequential: 1 when this check is stable, else 0.
        top: Current top-k operations, most probable first (``none`` excluded).
        seen: Checks of this key since its last reset.
        probs: The (smoothed) distribution that was tested.
        no_preference: ``stable`` although at least one operation outside
            ``top`` was not shown worse than the leader (the edge showed no
            preference among them; e.g. pure noise decided early).
        evidence: Weakest evidence that an operation outside ``top`` is worse
            than the leader: its log-probability margin over the
            :func:`mixture_bound` (>= 1: shown worse); ``None`` when nothing
            lies outside ``top``, before two checks, or when not tracked.
    """

    key: str
    js: float | None
    stable: bool
    count: int
    top: tuple[str, ...]
    seen: int
    probs: tuple[float, ...]
    no_preference: bool = False
    evidence: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view."""
        return {
            "key": self.key,
            "js": self.js,
            "stable": self.stable,
            "count": self.count,
            "top": list(self.top),
            "seen": self.seen,
            "probs": list(self.probs),
            "no_preference": self.no_preference,
            "evidence": self.evidence,
        }


class StabilityTest:
    """Per-key stability of a distribution over named operations.

    Each :meth:`update` compares the key's (optionally EMA-smoothed)
    distribution with the one ``window`` updates earlier. A check *counts*
    when the divergence is below ``tau`` and the top-k set equals both the
    reference's and that of the previous counted check; the key is stable
    once ``patience`` consecutive checks count. The first ``window`` updates
    after a reset have nothing to compare with and never count (warm-up).
    A change of the key's operation list restarts its history, as does
    :meth:`reset` (call it after pruning the key).

    Args:
        tau: Divergence threshold (base 2), > 0.
        patience: Consecutive counting checks needed, >= 1.
        window: Compare with the distribution this many checks earlier, >= 1.
        smoothing: EMA factor in ``[0, 1)``; the tested distribution is
            ``smoothing * previous + (1 - smoothing) * current`` (0 = none).
        top_k: Default size of the top-k set (``update`` may override it).
        evidence: Optional :class:`MarginEvidence` fed every update; it never
            changes a decision and only fills ``no_preference`` and
            ``evidence`` of the status (what the cut operations showed).
    """

    def __init__(
        self,
        tau: float,
        patience: int,
        window: int = 1,
        smoothing: float = 0.0,
        top_k: int = 1,
        evidence: "MarginEvidence | None" = None,
    ) -> None:
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if int(patience) != patience or patience < 1:
            raise ValueError(f"patience must be an integer >= 1, got {patience}")
        if int(window) != window or window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        if int(top_k) != top_k or top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1, got {top_k}")
        self.tau = float(tau)
        self.patience = int(patience)
        self.window = int(window)
        self.smoothing = float(smoothing)
        self.top_k = int(top_k)
        self.evidence = evidence
        self._edges: dict[str, dict[str, Any]] = {}

    def update(self, edge_key: str, ops: Sequence[str], probs: Sequence[float], k: int | None = None) -> EdgeStatus:
        """Records one check of ``edge_key`` and says whether it is stable.

        Args:
            edge_key: Any string naming the distribution (e.g. ``"0:2->3"``).
            ops: Names of the entries of ``probs`` in canonical order.
            probs: The distribution (scaled to sum 1 if it does not).
            k: Top-k size for this check (the edge's current keep target);
                defaults to ``top_k``.

        Returns:
            The edge's :class:`EdgeStatus` after this check.
        """
        k, ops, p = _update_args(edge_key, ops, probs, self.top_k if k is None else k)
        st = self._edges.get(edge_key)
        if st is None or tuple(st["ops"]) != ops:
            st = {"ops": list(ops), "history": [], "count": 0, "streak_top": [], "seen": 0}
            self._edges[edge_key] = st
        history: list[list[float]] = st["history"]
        if history and self.smoothing > 0:
            p = self.smoothing * np.asarray(history[-1]) + (1.0 - self.smoothing) * p
        top = top_k_ops(ops, p, k)
        js: float | None = None
        if len(history) >= self.window:
            ref = history[-self.window]
            js = js_divergence(p, ref)
            same_top = set(top) == set(top_k_ops(ops, ref, k))
            if js < self.tau and same_top:
                continuing = st["count"] > 0 and set(top) == set(st["streak_top"])
                st["count"] = st["count"] + 1 if continuing else 1
                st["streak_top"] = list(top)
            else:
                st["count"] = 0
                st["streak_top"] = []
        history.append([float(x) for x in p])
        del history[: -self.window]
        st["seen"] += 1
        stable = st["count"] >= self.patience
        no_preference, evidence = False, None
        if self.evidence is not None:
            # The raw distribution: the evidence is about the logits, not the EMA.
            self.evidence.observe(edge_key, ops, _as_distribution(probs, edge_key))
            verdicts, evidence = self.evidence.verdicts(edge_key, top[:1], _outsiders(ops, top))
            no_preference = stable and any(v != WORSE for v in verdicts.values())
        return EdgeStatus(
            key=edge_key,
            js=js,
            stable=stable,
            count=st["count"],
            top=top,
            seen=st["seen"],
            probs=tuple(history[-1]),
            no_preference=no_preference,
            evidence=evidence,
        )

    def reset(self, edge_key: str) -> None:
        """Forgets ``edge_key``'s history and count (after pruning it).

        The margin evidence on its surviving operations is kept: their logits
        carry on through pruning.
        """
        self._edges.pop(edge_key, None)

    def keys(self) -> list[str]:
        """Keys with a recorded history, in insertion order."""
        return list(self._edges)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state (settings and every key's history) for checkpoints."""
        return {
            "tau": self.tau,
            "patience": self.patience,
            "window": self.window,
            "smoothing": self.smoothing,
            "top_k": self.top_k,
            "edges": {
                key: {
                    "ops": list(st["ops"]),
                    "history": [list(h) for h in st["history"]],
                    "count": st["count"],
                    "streak_top": list(st["streak_top"]),
                    "seen": st["seen"],
                }
                for key, st in self._edges.items()
            },
            "evidence": None if self.evidence is None else self.evidence.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict` output; the settings must match.

        Raises:
            ValueError: If the saved settings differ from this test's.
        """
        for name in ("tau", "patience", "window", "smoothing", "top_k"):
            if name in state and state[name] != getattr(self, name):
                raise ValueError(
                    f"stability state was saved with {name}={state[name]!r}, this test has {getattr(self, name)!r}"
                )
        self._edges = {
            key: {
                "ops": list(st["ops"]),
                "history": [[float(x) for x in h] for h in st["history"]],
                "count": int(st["count"]),
                "streak_top": list(st["streak_top"]),
                "seen": int(st["seen"]),
            }
            for key, st in state.get("edges", {}).items()
        }
        if self.evidence is not None and state.get("evidence") is not None:
            self.evidence.load_state_dict(state["evidence"])


# -- the adaptive criterion: sequential evidence on log-probability margins -----


def _outsiders(ops: Sequence[str], top: Sequence[str]) -> list[str]:
    """Non-``none`` operations outside ``top``: the ones a cut to ``top`` drops (``none`` goes anyway)."""
    return [op for op in ops if op != NONE_OP and op not in top]


def _check_error_effect(error: float, effect: float) -> None:
    if not 0.0 < error < 1.0:
        raise ValueError(f"error must be in (0, 1), got {error}")
    if not effect > 0 or not math.isfinite(effect):
        raise ValueError(f"effect must be a finite number > 0, got {effect}")


def mixture_bound(var: float, error: float, effect: float) -> float:
    """Margin a pair without preference exceeds, at any check, with probability at most ``error``.

    Robbins' normal-mixture boundary for a martingale whose increments have
    (estimated) total variance ``var``:
    ``sqrt((var + rho) * (2 log(1 / error) + log(1 + var / rho)))`` with
    ``rho = 1 / effect**2`` (the mixing distribution's precision: the
    boundary is tightest for drifts of about ``effect`` per unit of
    variance). Crossing it, the margin's sign is settled at level ``error``
    however often the margin was looked at before.

    Args:
        var: The margin's variance so far (log-probability units squared), >= 0.
        error: Chance of ever crossing without a preference, in (0, 1).
        effect: Drift per unit of variance the mixture is centred on, > 0.

    Returns:
        The boundary (log-probability units).
    """
    _check_error_effect(error, effect)
    rho = 1.0 / effect**2
    var = max(float(var), 0.0)
    return math.sqrt((var + rho) * (2.0 * math.log(1.0 / error) + math.log1p(var / rho)))


def indifference_bound(var: float, error: float, effect: float) -> float:
    """Margin at or below which a pair shows no preference worth ``effect``.

    The lower boundary of Wald's sequential probability ratio test of "no
    drift" against "a drift of ``effect`` per unit of variance", for a
    margin with variance ``var``: ``effect * var / 2 - log(1 / error) /
    effect``. It is negative until the variance reaches
    ``2 log(1 / error) / effect**2`` and then grows linearly, overtaking a
    driftless margin (which grows like ``sqrt(var)``); a pair drifting
    faster than ``effect / 2`` per unit of variance stays above it.

    Args:
        var: The margin's variance so far, >= 0.
        error: Chance of calling a pair with drift ``effect`` indifferent
            (the test's miss rate), in (0, 1).
        effect: The smallest drift per unit of variance worth finding, > 0.

    Returns:
        The boundary (log-probability units; negative while nothing can be said).
    """
    _check_error_effect(error, effect)
    return effect * max(float(var), 0.0) / 2.0 - math.log(1.0 / error) / effect


class MarginEvidence:
    """Per key: the log-probability margins between operations and their variance.

    Each :meth:`observe` adds the increment of ``log p`` since the key's
    previous look (from the uniform start at the first look). For a pair
    ``(i, j)`` the margin ``S`` is the sum of its increments
    (``log p_i - log p_j`` now) and ``V`` the centred sum of squares of its
    increments scaled to estimate ``S``'s variance
    (``n / (n - 1) * sum (x - mean)**2``); a common shift of the
    logits (renormalising over survivors) cancels in both. When the key's
    operations shrink to a subset (pruning), the survivors' sums are kept:
    their logits carry on; any other change restarts the key.

    Args:
        error: Error level of :func:`mixture_bound` (shown worse without a handicap).
        effect: Drift per unit of variance of both boundaries (1 / log-probability).
        miss: Error level of :func:`indifference_bound` (a drift of ``effect``
            called indifferent); ``None``: ``error``.
    """

    def __init__(self, error: float, effect: float, miss: float | None = None) -> None:
        miss = error if miss is None else miss
        _check_error_effect(error, effect)
        _check_error_effect(miss, effect)
        self.error, self.effect, self.miss = float(error), float(effect), float(miss)
        self._keys: dict[str, dict[str, Any]] = {}

    def observe(self, key: str, ops: Sequence[str], probs: np.ndarray) -> None:
        """Adds one look at ``key``'s distribution ``probs`` over ``ops``."""
        ops = tuple(ops)
        st = self._keys.get(key)
        if st is not None and tuple(st["ops"]) != ops:
            st = self._restricted(st, ops)
        if st is None:
            n_ops = len(ops)
            st = {"ops": list(ops), "n": 0, "last": [0.0] * n_ops, "sums": [0.0] * n_ops,
                  "cross": [[0.0] * n_ops for _ in range(n_ops)]}
        logp = np.log(np.maximum(np.asarray(probs, dtype=np.float64), np.finfo(np.float64).tiny))
        step = logp - np.asarray(st["last"])
        st["n"] += 1
        st["last"] = logp.tolist()
        st["sums"] = (np.asarray(st["sums"]) + step).tolist()
        st["cross"] = (np.asarray(st["cross"]) + np.outer(step, step)).tolist()
        self._keys[key] = st

    @staticmethod
    def _restricted(st: Mapping[str, Any], ops: tuple[str, ...]) -> dict[str, Any] | None:
        """``st`` cut to the operations ``ops`` (a subset of its own), else ``None``."""
        if not set(ops) <= set(st["ops"]):
            return None
        idx = [st["ops"].index(op) for op in ops]
        cross = np.asarray(st["cross"])[np.ix_(idx, idx)]
        return {"ops": list(ops), "n": st["n"], "last": [st["last"][i] for i in idx],
                "sums": [st["sums"][i] for i in idx], "cross": cross.tolist()}

    def margin(self, key: str, i: str, j: str) -> tuple[float, float | None]:
        """``(S, V)`` of the pair ``(i, j)`` of ``key``; ``V`` is ``None`` before two looks."""
        st = self._keys[key]
        a, b = st["ops"].index(i), st["ops"].index(j)
        s = st["sums"][a] - st["sums"][b]
        n = st["n"]
        if n < MIN_INCREMENTS:
            return s, None
        cross = st["cross"]
        raw = cross[a][a] + cross[b][b] - 2.0 * cross[a][b]
        return s, max(raw - s * s / n, 0.0) * n / (n - 1)

    def verdicts(self, key: str, leader: Sequence[str], others: Sequence[str]) -> tuple[dict[str, str], float | None]:
        """Each of ``others`` against the leader: shown worse, no preference, or still open.

        Args:
            key: A key observed before.
            leader: The leading operation (one name; empty: nothing to test).
            others: Operations to compare with it.

        Returns:
            ``({op: WORSE | INDIFFERENT | OPEN}, evidence)`` where ``evidence``
            is the smallest ``S / mixture_bound(V)`` over ``others``
            (``None`` when there are none or before two looks).
        """
        out: dict[str, str] = {}
        ratios = []
        for op in others if leader else ():
            s, v = self.margin(key, leader[0], op)
            if v is None:
                out[op] = OPEN
                continue
            bound = mixture_bound(v, self.error, self.effect)
            ratios.append(s / bound)
            if s >= bound:
                out[op] = WORSE
            elif abs(s) <= indifference_bound(v, self.miss, self.effect):
                out[op] = INDIFFERENT
            else:
                out[op] = OPEN
        return out, (min(ratios) if ratios else None)

    def forget(self, key: str) -> None:
        """Drops everything known about ``key``."""
        self._keys.pop(key, None)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state (settings and every key's sums)."""
        return {"error": self.error, "effect": self.effect, "miss": self.miss,
                "keys": {k: {**st, "ops": list(st["ops"])} for k, st in self._keys.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict` output; the settings must match.

        Raises:
            ValueError: If the saved settings differ from this one's.
        """
        for name in ("error", "effect", "miss"):
            if state[name] != getattr(self, name):
                raise ValueError(f"margin evidence was saved with {name}={state[name]!r}, this one has {getattr(self, name)!r}")
        self._keys = {
            k: {"ops": list(st["ops"]), "n": int(st["n"]), "last": [float(x) for x in st["last"]],
                "sums": [float(x) for x in st["sums"]], "cross": [[float(x) for x in row] for row in st["cross"]]}
            for k, st in state["keys"].items()
        }


class SequentialMarginTest:
    """The adaptive criterion: cut to the top-k once every dropped operation is settled.

    Drop-in for :class:`StabilityTest` (same ``update`` / ``reset`` /
    ``state_dict`` / ``load_state_dict``, :class:`EdgeStatus` out). At each
    check the key's margins are updated (:class:`MarginEvidence`); the key is
    *stable* when every non-``none`` operation outside the current top-k is
    either shown worse than the leader (the most probable operation) or
    shows no preference against it. ``no_preference`` says the second
    happened for at least one of them. A weak signal therefore waits until
    the margin's variance makes it clear; pure noise ends as "no preference"
    after a variance of about ``2 log(1 / miss) / effect**2``.

    Args:
        error: Chance that a pair without preference is ever shown worse, in (0, 1).
        effect: Smallest drift of a margin per unit of its variance worth
            finding (1 / log-probability), > 0.
        top_k: Default size of the top-k set (``update`` may override it).
        miss: Chance that a pair drifting at ``effect`` is called indifferent,
            in (0, 1); ``None``: ``error``.
    """

    def __init__(self, error: float, effect: float, top_k: int = 1, miss: float | None = None) -> None:
        if int(top_k) != top_k or top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1, got {top_k}")
        self.evidence = MarginEvidence(error, effect, miss)
        self.top_k = int(top_k)
        self._seen: dict[str, int] = {}

    def update(self, edge_key: str, ops: Sequence[str], probs: Sequence[float], k: int | None = None) -> EdgeStatus:
        """Records one check of ``edge_key`` and says whether it may be cut to its top-k.

        Args:
            edge_key: Any string naming the distribution.
            ops: Names of the entries of ``probs`` in canonical order.
            probs: The distribution (scaled to sum 1 if it does not).
            k: Top-k size for this check; defaults to ``top_k``.

        Returns:
            The key's :class:`EdgeStatus` after this check (``js`` is ``None``).
        """
        k, ops, p = _update_args(edge_key, ops, probs, self.top_k if k is None else k)
        self.evidence.observe(edge_key, ops, p)
        top = top_k_ops(ops, p, k)
        verdicts, evidence = self.evidence.verdicts(edge_key, top[:1], _outsiders(ops, top))
        stable = all(v != OPEN for v in verdicts.values())
        self._seen[edge_key] = self._seen.get(edge_key, 0) + 1
        return EdgeStatus(
            key=edge_key,
            js=None,
            stable=stable,
            count=int(stable),
            top=top,
            seen=self._seen[edge_key],
            probs=tuple(float(x) for x in p),
            no_preference=stable and any(v == INDIFFERENT for v in verdicts.values()),
            evidence=evidence,
        )

    def reset(self, edge_key: str) -> None:
        """Restarts ``edge_key``'s decision after pruning it.

        The margin evidence on its surviving operations is kept: their logits
        carry on through pruning, and the boundaries hold for every check
        since the start.
        """
        self._seen.pop(edge_key, None)

    def keys(self) -> list[str]:
        """Keys seen since their last reset, in insertion order."""
        return list(self._seen)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state for checkpoints."""
        return {"top_k": self.top_k, "seen": dict(self._seen), "evidence": self.evidence.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict` output; the settings must match.

        Raises:
            ValueError: If the saved settings differ from this test's.
        """
        if state.get("top_k") != self.top_k:
            raise ValueError(f"stability state was saved with top_k={state.get('top_k')!r}, this test has {self.top_k!r}")
        self.evidence.load_state_dict(state["evidence"])
        self._seen = {k: int(v) for k, v in state["seen"].items()}


def make_stability_test(cfg: "StabilityConfig", top_k: int) -> StabilityTest | SequentialMarginTest:
    """The stability test ``cfg.criterion`` names, with ``cfg``'s settings.

    ``"js"`` is the paper's test (:class:`StabilityTest`; its status also
    reports the margin evidence of what it cuts), ``"sequential"`` the
    adaptive one (:class:`SequentialMarginTest`).

    Args:
        cfg: Stability settings (an :class:`iac.config.StabilityConfig`).
        top_k: Default top-k size (the first keep target).

    Raises:
        ValueError: If ``cfg.criterion`` names no known criterion.
    """
    if cfg.criterion == "js":
        evidence = MarginEvidence(cfg.seq_error, cfg.seq_effect, cfg.seq_miss)
        return StabilityTest(cfg.tau, cfg.patience, cfg.window, cfg.smoothing, top_k=top_k, evidence=evidence)
    if cfg.criterion == "sequential":
        return SequentialMarginTest(cfg.seq_error, cfg.seq_effect, top_k=top_k, miss=cfg.seq_miss)
    raise ValueError(f"criterion {cfg.criterion!r} is not one of 'js', 'sequential'")
