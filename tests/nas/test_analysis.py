"""Trajectory analysis, offline replay of the stability policy, and ``iac analyze``."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from iac.config import StabilityConfig
from iac.nas import analysis
from iac.nas.genotype import CellGenotype, Genotype, SearchSpace, discretize, edge_key
from iac.nas.pruning import JSStabilityPruning, edge_states_of
from iac.nas.stability import js_divergence

OPS = ("none", "skip_connect", "max_pool_3x3", "sep_conv_3x3", "dil_conv_3x3")
SPACE = SearchSpace(ops=OPS, nodes=2, n_inputs=2, steps_per_node=2, k=1, cell_channels=4)
KEYS = [edge_key(i, j) for i, j in SPACE.edges()]
CHECKS_PER_EPOCH = 2
CFG = StabilityConfig(tau=1e-3, patience=2, window=1)


def softmax(x):
    e = np.exp(np.asarray(x, dtype=np.float64) - np.max(x))
    return e / e.sum()


# ---------------------------------------------------------------- synthetic searches


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
        for ev in events:
            if ev.kind == "ops":
                ops[ev.edge_index] = ev.kept
            else:
                for e in SPACE.node_edges(ev.node):
                    alive[e] = alive[e] and e in ev.kept_indices
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


def test_topk_membership_on_hand_made_trajectory():
    m = analysis.topk_membership(HAND)
    # Final genotype (from the last check, `none` ignored): sep_conv on 0->2, skip on 1->2.
    assert str(analysis.final_genotype(HAND)) == "n2<-sep_conv_3x3(0),skip_connect(1)"
    assert list(m["check"].unique()) == [2, 3, 4]  # the last check of each epoch
    ranks = m.pivot(index="epoch", columns="edge", values="rank")
    # Epoch 0: 0->2 uniform, ties by op order: sep_conv is third; 1->2: skip is last of the four real ops.
    assert ranks.loc[0].tolist() == [3.0, 4.0]
    assert ranks.loc[1].tolist() == [1.0, 1.0] and ranks.loc[2].tolist() == [1.0, 1.0]
    e0 = m[m["epoch"] == 0].set_index("edge")
    assert e0.loc["0->2", ["top1", "top2", "top3"]].tolist() == [False, False, True]
    assert e0.loc["1->2", ["top1", "top2", "top3"]].tolist() == [False, False, False]
    assert analysis.first_epoch_in_topk(m, 3) == 1
    assert analysis.first_epoch_in_topk(m, 1) == 1


def test_first_epoch_requires_staying_in_topk():
    def table(flags):
        return pd.DataFrame({"epoch": range(len(flags)), "top3": flags})

    assert analysis.first_epoch_in_topk(table([True, False, True, True]), 3) == 2
    assert analysis.first_epoch_in_topk(table([True, True, False]), 3) is None
    assert analysis.first_epoch_in_topk(table([True, True]), 3) == 0
    with pytest.raises(ValueError, match="top5"):
        analysis.first_epoch_in_topk(table([True]), 5)


def test_final_genotype_prefers_the_recorded_one():
    recorded = Genotype(HAND_SPACE, (CellGenotype(((("max_pool_3x3", 0), ("dil_conv_3x3", 1)),)),))
    traj = {**HAND, "final_genotype": recorded.to_dict()}
    assert analysis.final_genotype(traj) == recorded
    m = analysis.topk_membership(traj)
    assert m[m["epoch"] == 2].set_index("edge")["final_op"].to_dict() == {"0->2": "max_pool_3x3", "1->2": "dil_conv_3x3"}


def test_rank_correlation_and_js_curves():
    rho = analysis.rank_correlation(HAND).set_index(["epoch", "edge"])["spearman"]
    assert rho.loc[(2, "0->2")] == pytest.approx(1.0) and rho.loc[(2, "1->2")] == pytest.approx(1.0)
    assert math.isnan(rho.loc[(0, "0->2")])  # uniform: no ranking yet
    js = analysis.js_curves(HAND)
    assert len(js) == 3 * 2
    first = js[(js["check"] == 2) & (js["edge"] == "0->2")]["js"].item()
    assert first == js_divergence([0.2] * 5, HAND["checks"][0]["archs"][0]["edges"][0]["alpha"])


def test_js_curves_restrict_across_pruning():
    logits = Logits(seed=3)
    traj, *_ = live_trajectory(logits, CFG)
    js = analysis.js_curves(traj)
    assert js["js"].between(0, 1).all() and js["js"].notna().all()
    assert set(js["edge"]) == set(KEYS)


def test_load_trajectory_validates(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        analysis.load_trajectory(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"space": {}}))
    with pytest.raises(ValueError, match="checks"):
        analysis.load_trajectory(bad)
    good = tmp_path / "t.json"
    good.write_text(json.dumps(HAND))
    assert analysis.load_trajectory(good)["checks"] == HAND["checks"]


# ---------------------------------------------------------------- restriction and replay


def test_restrict_check_renormalises_and_leaves_matching_records_alone():
    logits = Logits(seed=0)
    full = full_trajectory(logits, n_checks=10)
    policy = JSStabilityPruning(SPACE, CFG)
    rec = full["checks"][0]
    assert analysis.restrict_check(rec, policy)["archs"] == rec["archs"]  # before any check
    policy.observe(rec)
    policy._archs[0].ops[0] = ("max_pool_3x3", "sep_conv_3x3")  # as after a pruning
    policy._archs[0].ops[2] = None  # edge 0->3 dropped
    snapshot = json.dumps(full["checks"][1])
    out = analysis.restrict_check({**full["checks"][1], "status": {}}, policy)
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
        analysis.restrict_check(stale, policy)


def test_replay_of_live_trajectory_reproduces_stop_and_genotype():
    for seed in range(3):
        logits = Logits(seed=seed)
        traj, stop, geno, policy = live_trajectory(logits, CFG)
        assert stop is not None, "the synthetic search converges"
        assert len(traj["checks"]) > stop["check"] or stop["check"] % CHECKS_PER_EPOCH == 0
        res = analysis.replay(json.loads(json.dumps(traj)), cfg=CFG)
        assert (res.stop_check, res.stop_epoch, res.stop_arch_step) == (stop["check"], stop["epoch"], stop["arch_step"])
        assert res.genotype == geno == analysis.final_genotype(traj)
        assert [ev.to_dict() for ev in res.events] == traj["events"]


def test_replay_of_full_trajectory_matches_the_live_search():
    # Here pruning does not change the logits, so the replay is not counterfactual.
    logits = Logits(seed=1)
    full = full_trajectory(logits)
    _, stop, geno, policy = live_trajectory(logits, CFG)
    res = analysis.replay(full, cfg=CFG)
    assert res.stopped and res.stop_check == stop["check"] and res.stop_epoch == stop["epoch"]
    assert res.genotype == geno
    assert [(ev.check, ev.edge, ev.kept) for ev in res.events] == [(ev.check, ev.edge, ev.kept) for ev in policy.events]


def test_replay_of_pruned_trajectory_with_later_pruning_diverges():
    traj, stop, *_ = live_trajectory(Logits(seed=0), CFG)
    later = replace(CFG, patience=CFG.patience + 2)
    with pytest.raises(analysis.ReplayDiverged) as err:
        analysis.replay(traj, cfg=later)
    first_event = traj["events"][0]["check"]
    assert err.value.check == first_event + 1
    grid = analysis.replay_grid(traj, [CFG.tau], [CFG.patience, later.patience], [CFG.window])
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
    res = analysis.replay(traj, cfg=CFG)
    assert not res.stopped and res.stop_epoch is None and res.events == ()
    assert res.genotype == genotype_of(checks[-1])
    with pytest.raises(ValueError, match="no checks"):
        analysis.replay({**traj, "checks": []})


def test_replay_grid():
    logits = Logits(seed=2)
    full = full_trajectory(logits)
    below_all = float(analysis.js_curves(full)["js"].min()) / 2  # no edge is ever this still
    grid = analysis.replay_grid(full, taus=[below_all, 1e-3, 1e-2], patiences=[1, 3], windows=[1, 2], base=CFG)
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
    res = analysis.replay(full, cfg=replace(CFG, tau=1e-3, patience=3, window=1))
    assert row["stop_epoch"] == res.stop_epoch and row["genotype_equal"] == (res.genotype == analysis.final_genotype(full))
    with pytest.raises(ValueError, match="taus"):
        analysis.replay_grid(full, [], [1], [1])


def test_op_timeline_and_plots():
    logits = Logits(seed=0)
    traj, stop, geno, policy = live_trajectory(logits, CFG)
    tl = analysis.op_timeline(traj["events"], SPACE)
    assert len(tl) == len(KEYS) * len(OPS)
    left = tl[tl["removed_epoch"].isna()]
    survivors = {k: policy.surviving_ops(0, k) for k in KEYS}
    assert {(r.edge, r.op) for r in left.itertuples()} == {(k, ops[0]) for k, ops in survivors.items() if ops is not None}
    assert (tl[tl["by"] == "edges"]["edge"].isin([k for k, ops in survivors.items() if ops is None])).all()
    figs = [
        analysis.plot_js_curves(analysis.js_curves(traj), tau=CFG.tau),
        analysis.plot_op_timeline(tl, traj["epochs"][-1]["epoch"]),
        analysis.plot_topk_membership(analysis.topk_membership(traj)),
    ]
    assert all(len(f.axes) == 1 for f in figs)


# ---------------------------------------------------------------- the command


def test_analyze_command_on_a_file(tmp_path):
    from click.testing import CliRunner

    from iac.commands.analyze import analyze

    path = tmp_path / "trajectory.json"
    path.write_text(json.dumps(full_trajectory(Logits(seed=0), n_checks=40)))
    out = tmp_path / "out"
    result = CliRunner().invoke(analyze, [str(path), "--out", str(out), "--tau", "1e-3,1e-2", "--patience", "2", "--window", "1"])
    assert result.exit_code == 0, result.output
    assert "first epoch from which every final operation stays in the top-3" in result.output
    assert "genotype_equal" in result.output
    for name in ("topk_membership.csv", "rank_correlation.csv", "js_curves.csv", "replay_grid.csv", "op_timeline.csv",
                 "js_curves.png", "op_timeline.png", "topk_membership.png", "summary.json"):
        assert (out / name).is_file(), name
    assert len(pd.read_csv(out / "replay_grid.csv")) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 20 and "first_epoch_all_final_ops_in_top3" in summary


def test_analyze_command_downloads_from_a_run(tmp_path, monkeypatch):
    import sys
    import types

    from click.testing import CliRunner

    from iac.commands.analyze import analyze

    run_id = "0123456789abcdef0123456789abcdef"
    stored = tmp_path / "artifacts"
    stored.mkdir()
    (stored / "trajectory.json").write_text(json.dumps(HAND))
    asked = []

    def fake_download(artifact_uri=None, dst_path=None, **kw):
        asked.append(artifact_uri)
        target = tmp_path / "dl" / "trajectory.json"
        target.parent.mkdir(exist_ok=True)
        target.write_text((stored / "trajectory.json").read_text())
        return str(target)

    # A stand-in for MLflow's artifact download (importing MLflow itself takes seconds).
    fake = types.SimpleNamespace(artifacts=types.SimpleNamespace(download_artifacts=fake_download))
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    result = CliRunner().invoke(analyze, [run_id, "--out", str(tmp_path / "o"), "--tau", "1e-3", "--patience", "1", "--window", "1"])
    assert result.exit_code == 0, result.output
    assert asked == [f"runs:/{run_id}/trajectory.json"]
    assert "epoch 1 (0-based) of 3" in result.output


def test_analyze_command_rejects_bad_source(tmp_path):
    from click.testing import CliRunner

    from iac.commands.analyze import analyze

    result = CliRunner().invoke(analyze, ["no-such-file.json", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "neither a trajectory file" in result.output
    result = CliRunner().invoke(analyze, [str(tmp_path), "--tau", "x"])
    assert result.exit_code != 0 and "--tau" in result.output
