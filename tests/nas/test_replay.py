"""Offline replay of the stability policy on recorded trajectories."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from trajectorykit import CFG, CHECKS_PER_EPOCH, KEYS, OPS, SPACE, Logits, full_trajectory, genotype_of, live_trajectory

from iac.nas.analysis import consecutive_js
from iac.nas.pruning import JSStabilityPruning
from iac.nas.replay import ReplayDiverged, decision_fidelity, replay, replay_grid, restrict_check
from iac.nas.trajectory import final_genotype


def test_restrict_check_renormalises_and_leaves_matching_records_alone():
    logits = Logits(seed=0)
    full = full_trajectory(logits, n_checks=10)
    policy = JSStabilityPruning(SPACE, CFG)
    rec = full["checks"][0]
    assert restrict_check(rec, policy)["archs"] == rec["archs"]  # before any check
    policy.observe(rec)
    policy._archs[0].ops[0] = ("max_pool_3x3", "sep_conv_3x3")  # as after a pruning
    policy._archs[0].ops[2] = None  # edge 0->3 dropped
    snapshot = json.dumps(full["checks"][1])
    out = restrict_check({**full["checks"][1], "status": {}}, policy)
    assert json.dumps(full["checks"][1]) == snapshot  # input untouched
    assert "status" not in out
    e0 = out["archs"][0]["edges"][0]
    src = full["checks"][1]["archs"][0]["edges"][0]
    w = np.array([src["alpha"][2], src["alpha"][3]])
    assert e0["ops"] == ["max_pool_3x3", "sep_conv_3x3"] and e0["alpha"] == pytest.approx(w / w.sum())
    edges = out["archs"][0]["edges"]
    assert edges[2]["alive"] is False and edges[2]["beta"] == 0.0
    assert edges[3]["beta"] + edges[4]["beta"] == pytest.approx(1.0)
    assert edges[1] == full["checks"][1]["archs"][0]["edges"][1]  # unchanged edge: same numbers
    stale = {**full["checks"][1]}
    policy._archs[0].ops[1] = ("skip_connect",)
    stale["archs"] = [{"edges": [dict(e, ops=["none"], alpha=[1.0]) if e["edge"] == "1->2" else e for e in stale["archs"][0]["edges"]]}]
    with pytest.raises(ValueError, match="lacks"):
        restrict_check(stale, policy)


def test_replay_of_live_trajectory_reproduces_stop_and_genotype():
    for seed in range(3):
        logits = Logits(seed=seed)
        traj, stop, geno, policy = live_trajectory(logits, CFG)
        assert stop is not None, "the synthetic search converges"
        assert len(traj["checks"]) > stop["check"] or stop["check"] % CHECKS_PER_EPOCH == 0
        res = replay(json.loads(json.dumps(traj)), cfg=CFG)
        assert (res.stop_check, res.stop_epoch, res.stop_arch_step) == (stop["check"], stop["epoch"], stop["arch_step"])
        assert res.genotype == geno == final_genotype(traj)
        assert [ev.to_dict() for ev in res.events] == traj["events"]


def test_replay_of_full_trajectory_matches_the_live_search():
    # Here pruning does not change the logits, so the replay is not counterfactual.
    logits = Logits(seed=1)
    full = full_trajectory(logits)
    _, stop, geno, policy = live_trajectory(logits, CFG)
    res = replay(full, cfg=CFG)
    assert res.stopped and res.stop_check == stop["check"] and res.stop_epoch == stop["epoch"]
    assert res.genotype == geno
    assert [(ev.check, ev.edge, ev.kept) for ev in res.events] == [(ev.check, ev.edge, ev.kept) for ev in policy.events]


def test_replay_of_pruned_trajectory_with_later_pruning_diverges():
    traj, stop, *_ = live_trajectory(Logits(seed=0), CFG)
    later = replace(CFG, patience=CFG.patience + 2)
    with pytest.raises(ReplayDiverged) as err:
        replay(traj, cfg=later)
    first_event = traj["events"][0]["check"]
    assert err.value.check == first_event + 1
    grid = replay_grid(traj, [CFG.tau], [CFG.patience, later.patience], [CFG.window])
    same, diverged = grid.iloc[0], grid.iloc[1]
    assert same["stop_check"] == stop["check"] and pd.isna(same["diverged_check"]) and same["genotype_equal"]
    assert diverged["diverged_check"] == first_event + 1 and not diverged["stopped"] and pd.isna(diverged["stop_epoch"])


def test_replay_that_never_stabilises():
    rng = np.random.default_rng(0)
    checks = []
    for t in range(20):
        edges = [
            {"edge": k, "ops": list(OPS), "alpha": list(rng.dirichlet(np.ones(len(OPS)))), "beta": b, "alive": True}
            for k, b in zip(KEYS, [0.5, 0.5, 1 / 3, 1 / 3, 1 / 3])
        ]
        checks.append({"check": t + 1, "epoch": t, "arch_step": t + 1, "archs": [{"edges": edges}]})
    traj = {"space": SPACE.to_dict(), "checks": checks, "epochs": [{"epoch": t} for t in range(20)]}
    res = replay(traj, cfg=CFG)
    assert not res.stopped and res.stop_epoch is None and res.events == ()
    assert res.genotype == genotype_of(checks[-1])
    with pytest.raises(ValueError, match="no checks"):
        replay({**traj, "checks": []})


def test_replay_grid():
    logits = Logits(seed=2)
    full = full_trajectory(logits)
    below_all = float(consecutive_js(full)["js"].min()) / 2  # no edge is ever this still
    grid = replay_grid(full, taus=[below_all, 1e-3, 1e-2], patiences=[1, 3], windows=[1, 2], base=CFG)
    assert len(grid) == 12
    assert {"tau", "patience", "window", "stop_epoch", "epochs_run", "epoch_ratio", "genotype_equal"} <= set(grid.columns)
    strict = grid[grid["tau"] == below_all]
    assert not strict["stopped"].any() and (strict["epochs_run"] == len(full["epochs"])).all()
    loose = grid[grid["tau"] == 1e-2]
    assert loose["stopped"].all()
    # A longer patience never stops earlier.
    for (tau, window), part in grid[grid["stopped"]].groupby(["tau", "window"]):
        by_p = part.set_index("patience")["stop_check"]
        if {1, 3} <= set(by_p.index):
            assert by_p[1] <= by_p[3]
    row = grid[(grid["tau"] == 1e-3) & (grid["patience"] == 3) & (grid["window"] == 1)].iloc[0]
    res = replay(full, cfg=replace(CFG, tau=1e-3, patience=3, window=1))
    assert row["stop_epoch"] == res.stop_epoch and row["genotype_equal"] == (res.genotype == final_genotype(full))
    with pytest.raises(ValueError, match="taus"):
        replay_grid(full, [], [1], [1])


def test_decision_fidelity_agrees_on_still_logits_and_flags_a_pruned_operation_that_overtakes():
    # Logits that reach their targets at once: the survivors' view times their mass is the complete record.
    traj = full_trajectory(Logits(seed=3, time_constant=1e-3), n_checks=40)
    table = decision_fidelity(traj, CFG)
    assert {"ops", "edges"} <= set(table["kind"]) and table["agree"].all()
    # After the first operation pruning, one removed operation keeps training in the full search and overtakes:
    # IAC-LTH decides as before (the survivors' softmax is unchanged), the full search now prefers the removed one.
    first = table[(table["kind"] == "ops") & (table["n_kept"] > 1)].iloc[0]
    removed = next(op for op in OPS if op != "none" and op not in first["kept"].split(","))
    boosted = copy.deepcopy(traj)
    for rec in boosted["checks"]:
        if rec["check"] > first["check"]:
            edge = rec["archs"][0]["edges"][KEYS.index(first["target"])]
            logits = np.log(edge["alpha"])
            logits[OPS.index(removed)] += 10.0
            edge["alpha"] = [float(x) for x in np.exp(logits) / np.exp(logits).sum()]
    after = decision_fidelity(boosted, CFG)
    columns = ["check", "kind", "target", "kept"]
    pd.testing.assert_frame_equal(after[columns], table[columns])
    later = after[(after["check"] > first["check"]) & (after["target"] == first["target"])]
    assert len(later) and not later["agree"].any()
    assert (later["full_view"] == removed).all()


def test_decision_fidelity_refuses_a_pruned_trajectory():
    traj, *_ = live_trajectory(Logits(seed=0), CFG, n_checks=40)
    with pytest.raises(ValueError, match="full-search trajectory"):
        decision_fidelity(traj, CFG)
