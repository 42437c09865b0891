"""Synthetic search trajectories for the trajectory, analysis, replay and plot tests.

Architecture logits converge to random targets; a check records softmax over
what survives, exactly as the search loop does (``docs/architecture.md``),
and the IAC-LTH policy prunes on them as it goes. No network is trained.
"""

from __future__ import annotations

import math

import numpy as np

from iac.config import StabilityConfig
from iac.nas.genotype import Genotype, SearchSpace, discretize, edge_key
from iac.nas.pruning import JSStabilityPruning, edge_states_of

OPS = ("none", "skip_connect", "max_pool_3x3", "sep_conv_3x3", "dil_conv_3x3")
SPACE = SearchSpace(ops=OPS, nodes=2, n_inputs=2, steps_per_node=2, k=1, cell_channels=4)
KEYS = [edge_key(i, j) for i, j in SPACE.edges()]
CHECKS_PER_EPOCH = 2
CFG = StabilityConfig(tau=1e-3, patience=2, window=1)
EPOCH_SECONDS = 1.5  # nominal wall time of a synthetic epoch with every operation alive


def softmax(x):
    e = np.exp(np.asarray(x, dtype=np.float64) - np.max(x))
    return e / e.sum()


class Logits:
    """Architecture logits converging to random targets: l(t) = target * (1 - exp(-t / T))."""

    def __init__(self, seed=0, time_constant=6.0, scale=3.0):
        rng = np.random.default_rng(seed)
        self.alpha = {k: dict(zip(OPS, rng.normal(0, scale, len(OPS)))) for k in KEYS}
        self.beta = dict(zip(KEYS, rng.normal(0, scale, len(KEYS))))
        self.T = time_constant

    def at(self, t):
        f = 1 - math.exp(-t / self.T)
        return {k: {op: v * f for op, v in d.items()} for k, d in self.alpha.items()}, {k: v * f for k, v in self.beta.items()}


def record(t, logits, ops, alive):
    """A check as the search loop records it: softmax over what survives."""
    al, bl = logits.at(t)
    beta = {}
    for j in SPACE.node_ids:
        live = [e for e in SPACE.node_edges(j) if alive[e]]
        beta.update(zip(live, softmax([bl[KEYS[e]] for e in live])))
    edges = [
        {
            "edge": key,
            "ops": list(ops[e]),
            "alpha": [float(x) for x in softmax([al[key][op] for op in ops[e]])],
            "beta": float(beta.get(e, 0.0)),
            "alive": alive[e],
        }
        for e, key in enumerate(KEYS)
    ]
    return {"check": t + 1, "epoch": t // CHECKS_PER_EPOCH, "arch_step": 50 * (t + 1), "archs": [{"edges": edges}]}


def genotype_of(rec):
    return Genotype(SPACE, (discretize(SPACE, edge_states_of(SPACE, rec["archs"][0])),))


def full_trajectory(logits, n_checks=80):
    """A full search: every op survives; the final genotype from the last check."""
    ops, alive = [OPS] * len(KEYS), [True] * len(KEYS)
    checks = [record(t, logits, ops, alive) for t in range(n_checks)]
    epochs = [{"epoch": e, "val_dice": 0.5} for e in range(n_checks // CHECKS_PER_EPOCH)]
    geno = genotype_of(checks[-1])
    epochs[-1]["genotype"] = geno.to_dict()
    return {"space": SPACE.to_dict(), "checks": checks, "epochs": epochs, "final_genotype": geno.to_dict()}


def _apply(events, ops, alive):
    """Applies pruning events to the per-edge surviving ops and alive flags, in place."""
    for ev in events:
        if ev.kind == "ops":
            ops[ev.edge_index] = ev.kept
        else:
            for e in SPACE.node_edges(ev.node):
                alive[e] = alive[e] and e in ev.kept_indices


def live_trajectory(logits, cfg, n_checks=80):
    """An IAC-LTH search: the policy prunes as it goes; the epoch of the stop is finished."""
    policy = JSStabilityPruning(SPACE, cfg)
    ops, alive = [OPS] * len(KEYS), [True] * len(KEYS)
    checks, stop = [], None
    for t in range(n_checks):
        if stop is not None and t // CHECKS_PER_EPOCH != stop["epoch"]:
            break
        rec = record(t, logits, ops, alive)
        events = policy.observe(rec)
        checks.append(rec)
        _apply(events, ops, alive)
        if stop is None and policy.all_decided:
            stop = rec
    final = record(len(checks), logits, ops, alive)  # the supernet after the last epoch
    geno = genotype_of(final)
    traj = {
        "space": SPACE.to_dict(),
        "checks": checks,
        "epochs": [{"epoch": e} for e in range(checks[-1]["epoch"] + 1)],
        "events": [ev.to_dict() for ev in policy.events],
        "final_genotype": geno.to_dict(),
    }
    return traj, stop, geno, policy


def logged_trajectory(logits, cfg=None, n_checks=40):
    """A trajectory with every field the search loop logs (full search when ``cfg`` is None).

    Checks carry the policy's ``status`` (``None`` in a full search); epoch
    records carry the supernet's ``archs`` at the end of the epoch,
    ``val_dice``, ``epoch_seconds`` (shorter as operations are pruned),
    ``cum_seconds``, ``surviving_ops`` and ``genotype``. An IAC-LTH search
    stops after the epoch in which every edge is decided.
    """
    policy = JSStabilityPruning(SPACE, cfg) if cfg is not None else None
    ops, alive = [OPS] * len(KEYS), [True] * len(KEYS)
    traj = {"space": SPACE.to_dict(), "checks": [], "epochs": [], "events": []}
    cum = 0.0
    for epoch in range(n_checks // CHECKS_PER_EPOCH):
        for t in range(epoch * CHECKS_PER_EPOCH, (epoch + 1) * CHECKS_PER_EPOCH):
            rec = record(t, logits, ops, alive)
            events = policy.observe(rec) if policy else []
            rec["status"] = {k: s.to_dict() for k, s in policy.last_status.items()} if policy else None
            traj["checks"].append(rec)
            _apply(events, ops, alive)
            traj["events"] += [ev.to_dict() for ev in events]
        now = record((epoch + 1) * CHECKS_PER_EPOCH, logits, ops, alive)  # the supernet at the epoch's end
        surviving = sum(len(e["ops"]) for e in now["archs"][0]["edges"] if e["alive"])
        seconds = EPOCH_SECONDS * surviving / (len(OPS) * len(KEYS))
        cum += seconds
        geno = genotype_of(now)
        traj["epochs"].append(
            {"epoch": epoch, "val_dice": 0.5, "archs": now["archs"], "surviving_ops": surviving,
             "epoch_seconds": seconds, "cum_seconds": cum, "genotype": geno.to_dict()}
        )
        if policy and policy.all_decided:
            break
    traj["final_genotype"] = traj["epochs"][-1]["genotype"]
    return traj


# ---------------------------------------------------------------- hand-made trajectory


def hand_check(n, epoch, a02, a12, b=(0.5, 0.5)):
    edges = [
        {"edge": "0->2", "ops": list(OPS), "alpha": list(a02), "beta": b[0], "alive": True},
        {"edge": "1->2", "ops": list(OPS), "alpha": list(a12), "beta": b[1], "alive": True},
    ]
    return {"check": n, "epoch": epoch, "arch_step": 10 * n, "archs": [{"edges": edges}]}


HAND_SPACE = SearchSpace(ops=OPS, nodes=1, n_inputs=2, steps_per_node=2, k=1, cell_channels=4)
HAND = {
    "space": HAND_SPACE.to_dict(),
    "checks": [
        hand_check(1, 0, [0.1, 0.1, 0.1, 0.1, 0.6], [0.2, 0.4, 0.1, 0.2, 0.1]),  # not the last of epoch 0
        hand_check(2, 0, [0.2] * 5, [0.2, 0.1, 0.3, 0.25, 0.15]),
        hand_check(3, 1, [0.1, 0.1, 0.1, 0.6, 0.1], [0.2, 0.3, 0.2, 0.2, 0.1]),
        hand_check(4, 2, [0.5, 0.1, 0.05, 0.3, 0.05], [0.1, 0.4, 0.2, 0.2, 0.1]),
    ],
    "epochs": [{"epoch": e} for e in range(3)],
}
