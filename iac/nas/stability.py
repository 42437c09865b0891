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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.special import rel_entr

# Name of the zero operation: it never counts toward an edge's top-k
# (discretisation ignores it).
NONE_OP = "none"


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


@dataclass(frozen=True)
class EdgeStatus:
    """Outcome of one :meth:`StabilityTest.update`.

    Attributes:
        key: The edge (or node) key.
        js: Divergence from the distribution ``window`` checks earlier;
            ``None`` while fewer than ``window`` earlier checks exist.
        stable: ``count >= patience``.
        count: Consecutive checks with ``js < tau`` and the top-k set unchanged.
        top: Current top-k operations, most probable first (``none`` excluded).
        seen: Checks of this key since its last reset.
        probs: The (smoothed) distribution that was tested.
    """

    key: str
    js: float | None
    stable: bool
    count: int
    top: tuple[str, ...]
    seen: int
    probs: tuple[float, ...]

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
    """

    def __init__(self, tau: float, patience: int, window: int = 1, smoothing: float = 0.0, top_k: int = 1) -> None:
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
        k = self.top_k if k is None else int(k)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        ops = tuple(str(o) for o in ops)
        p = _as_distribution(probs, f"probs of {edge_key!r}")
        if len(ops) != p.size:
            raise ValueError(f"{edge_key!r}: {len(ops)} ops but {p.size} probabilities")
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
        return EdgeStatus(
            key=edge_key,
            js=js,
            stable=st["count"] >= self.patience,
            count=st["count"],
            top=top,
            seen=st["seen"],
            probs=tuple(history[-1]),
        )

    def reset(self, edge_key: str) -> None:
        """Forgets ``edge_key``'s history and count (after pruning it)."""
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
