"""The decision-quality simulator: gradients, the real policy in the loop, metrics, targets and choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iac.config import StabilityConfig
from iac.nas.simulate import (
    SIM_SPACE,
    LiveSource,
    MeritSource,
    Scenario,
    SimSettings,
    check_targets,
    choose,
    default_scenarios,
    live_edges,
    run_block,
    simulate_arm,
    summarise,
)

SMALL = SimSettings(budget=400, check_every=25, runs=12)
BEST = SIM_SPACE.ops.index("sep_conv_3x3")
# A JS threshold no divergence goes below: the policy never cuts.
NEVER = StabilityConfig(tau=1e-300, patience=1)
# One stable check is enough and any divergence passes: a cut every second check.
ALWAYS = StabilityConfig(tau=1.0, patience=1, window=1)


def merits(best: float) -> tuple[float, ...]:
    m = [0.0] * len(SIM_SPACE.ops)
    m[BEST] = best
    return tuple(m)


def source(scenario, settings=SMALL):
    return lambda seed: MeritSource(scenario, settings, settings.runs, seed)


def test_merit_gradient_is_the_softmax_jacobian_over_survivors():
    sc = Scenario("s", merits(0.3))
    src = MeritSource(sc, SMALL, 3, seed=0)
    alive = torch.tensor([[True] * 8, [False, True, True, False, True, False, True, False], [True] * 8])
    logits = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    probs = torch.softmax(logits.masked_fill(~alive, float("-inf")), dim=1)
    grad = src.grad(1, probs.detach())
    # Replay the same noise draw: dL/dp = -scale * (m + eps).
    eps = np.random.default_rng(0).standard_normal((3, 8))
    u = torch.as_tensor(np.asarray(sc.merits) + eps)
    (-(probs * u).sum()).backward()
    assert torch.allclose(grad, logits.grad, atol=1e-12)
    assert torch.all(grad[~alive] == 0)


def test_arms_share_the_noise_and_the_policy_prunes_on_its_own_schedule():
    sc = Scenario("s", merits(0.2))
    full = simulate_arm(source(sc)(3), SMALL, None, 3)
    never = simulate_arm(source(sc)(3), SMALL, NEVER, 3)
    # Same noise and start: an arm that never cuts ends exactly where the full search does.
    assert np.array_equal(full.final, never.final) and np.all(never.step == SMALL.budget)
    assert full.trace.shape == (SMALL.budget // SMALL.check_every, SMALL.runs)
    assert np.array_equal(full.trace[-1], full.final)
    cut = simulate_arm(source(sc)(3), SMALL, ALWAYS, 3)
    # 8 -> 3 -> 2 -> 1 through the real JSStabilityPruning: each stage needs a warm-up check and one
    # counting check (any divergence passes; the top-k set must hold), so no edge is decided before check 6.
    assert np.all(cut.step >= 6 * SMALL.check_every) and np.all(cut.step % SMALL.check_every == 0)
    assert np.any(cut.step == 6 * SMALL.check_every) and np.all(cut.step < SMALL.budget)
    assert all(SIM_SPACE.ops[i] != "none" for i in cut.final)


def test_full_search_finds_a_strong_signal_and_not_noise():
    strong = run_block(source(Scenario("s", merits(1.0))), SMALL, {}, 0)
    assert np.mean(np.asarray(strong["argmax"]) == BEST) == 1.0
    assert strong["trace_correct"][-1] == SMALL.runs
    noise = run_block(source(Scenario("n", merits(0.0))), SimSettings(budget=200, check_every=25, runs=70), {}, 0)
    assert np.mean(np.asarray(noise["argmax"]) == BEST) < 0.4  # about 1 in 7


def test_sequential_decides_strong_edges_early_and_flags_noise():
    settings = SimSettings(budget=1200, check_every=50, runs=12)
    seq = {"seq": StabilityConfig(criterion="sequential", seq_error=0.2, seq_effect=240.0)}
    strong = summarise([run_block(source(Scenario("s", merits(0.5)), settings), settings, seq, 1)], settings, 0.25)
    assert strong["seq"]["correct"] == 100.0 and strong["seq"]["median_step"] <= 0.25 * settings.budget
    noise = summarise([run_block(source(Scenario("n", merits(0.0)), settings), settings, seq, 2)], settings, 0.25)
    assert noise["seq"]["saving"] > 0 and noise["seq"]["no_preference"] >= 50.0


def block(argmax, best, steps, no_pref, finals, trace):
    return {"argmax": argmax, "best": best, "trace_correct": trace,
            "arms": {"c": {"final": finals, "step": steps, "no_preference": no_pref}}}


def test_summarise_pools_runs_and_reports_the_spread_across_blocks():
    settings = SimSettings(budget=100, check_every=25, runs=2)
    blocks = [
        block([4, 4], [4, 4], [25, 100], [True, True], [4, 1], [0, 1, 2, 2]),
        block([4, 1], [4, 4], [50, 50], [False, False], [4, 4], [1, 1, 1, 1]),
    ]
    s = summarise(blocks, settings, 0.5)
    assert s["argmax"]["correct"] == 75.0 and s["argmax"]["correct_early"] == 50.0
    assert s["argmax"]["curve"] == [25.0, 50.0, 75.0, 75.0]
    c = s["c"]
    assert c["correct"] == 75.0 and c["agree"] == 50.0  # final [4, 1, 4, 4] vs argmax [4, 4, 4, 1]
    assert c["median_step"] == 50.0 and c["saving"] == pytest.approx(100 * (0.75 + 0 + 0.5 + 0.5) / 4)
    assert c["no_preference"] == 25.0  # the undecided run (step = budget) does not count
    assert c["correct_sd"] == pytest.approx(np.std([50.0, 100.0], ddof=1))


def fake_summary(argmax, correct, median):
    return {"argmax": {"correct": argmax}, "c": {"correct": correct, "median_step": median}}


def test_targets_apply_where_the_argmax_is_good_and_decisions_must_rise():
    scs = [Scenario("hi", merits(0.2), snr=0.2), Scenario("lo", merits(0.1), snr=0.1), Scenario("x", merits(0.0))]
    sums = {"hi": fake_summary(100.0, 96.0, 300.0), "lo": fake_summary(92.0, 80.0, 200.0),
            "x": fake_summary(20.0, 10.0, 50.0)}
    rows = {(r["target"], r["scenario"]): r for r in check_targets(sums, scs, "c", budget=1000)}
    assert rows[("correct", "hi")]["met"] and rows[("early", "hi")]["limit"] == 250.0
    assert not rows[("early", "hi")]["met"]
    assert not rows[("correct", "lo")]["met"] and ("early", "lo") not in rows  # 92 % is not 100 %
    assert not any(s == "x" for _, s in rows)  # a weak argmax sets no target
    assert not rows[("rises", "hi -> lo")]["met"]  # 200 < 300: faster on the weaker signal


def test_choose_puts_correctness_before_speed():
    fast = [{"target": "correct", "met": False}, {"target": "early", "met": True}]
    slow = [{"target": "correct", "met": True}, {"target": "early", "met": False}, {"target": "rises", "met": False}]
    assert choose({"fast": fast, "slow": slow}, {"fast": 80.0, "slow": 10.0}) == "slow"
    assert choose({"a": slow, "b": slow}, {"a": 10.0, "b": 20.0}) == "b"


def live_trajectory(with_stats=True):
    checks = []
    for c in range(1, 9):
        edges = []
        for e, favoured in enumerate(("dil_conv_3x3", None)):
            mean = [(-1e-3 if op == favoured else 0.0) for op in SIM_SPACE.ops]
            rec = {"edge": f"{e}->2", "ops": list(SIM_SPACE.ops), "alpha": [1 / 8] * 8, "beta": 0.5, "alive": True}
            if with_stats:
                rec.update(grad_mean=mean, grad_var=[1e-8] * 8)
            edges.append(rec)
        checks.append({"check": c, "epoch": c, "arch_step": 25 * c, "archs": [{"edges": edges}]})
    return {"checks": checks}


def test_live_noise_replays_recorded_gradient_statistics():
    edges = live_edges(live_trajectory())
    assert len(edges) == 2 and edges[0][1].shape == (8, 8) and list(edges[0][0]) == [25 * c for c in range(1, 9)]
    assert live_edges(live_trajectory(with_stats=False)) == []
    with pytest.raises(ValueError, match="default operations"):
        live_edges({**live_trajectory(), "space": {"ops": ["none", "skip_connect"]}})
    src = LiveSource(edges, repeats=3, seed=0)
    assert src.runs == 6 and list(src.best[:3]) == [SIM_SPACE.ops.index("dil_conv_3x3")] * 3
    settings = SimSettings(budget=200, check_every=25, runs=6)
    full = simulate_arm(LiveSource(edges, 3, 0), settings, None, 0)
    assert np.all(full.final[:3] == src.best[:3])  # a mean gradient 10x its noise is found


def test_default_scenarios_cover_the_benchmark():
    scs = default_scenarios()
    assert len({sc.name for sc in scs}) == len(scs)
    assert sorted(sc.snr for sc in scs if sc.snr is not None) == [0.02, 0.05, 0.1, 0.2]
    overtaken = next(sc for sc in scs if sc.late_merits is not None)
    assert overtaken.best == BEST and SIM_SPACE.ops[int(np.argmax(overtaken.merits))] == "skip_connect"
    assert max(sc.ar for sc in scs) == 0.9
    with pytest.raises(ValueError, match="merits"):
        Scenario("bad", (0.0, 1.0))
    with pytest.raises(ValueError, match="ar"):
        Scenario("bad", merits(0.1), ar=1.0)
