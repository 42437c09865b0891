"""Jensen–Shannon criterion and the per-edge stability test."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from iac.nas.stability import EdgeStatus, StabilityTest, js_divergence, top_k_ops

OPS = ("none", "skip_connect", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
TAU = 1e-3


def softmax(x):
    e = np.exp(np.asarray(x, dtype=np.float64) - np.max(x))
    return e / e.sum()


# ---------------------------------------------------------------- js_divergence


def test_js_matches_scipy_squared_base2():
    rng = np.random.default_rng(0)
    for n in (2, 3, 8):
        for _ in range(20):
            p, q = rng.dirichlet(np.ones(n)), rng.dirichlet(np.ones(n) * 0.3)
            assert js_divergence(p, q) == pytest.approx(jensenshannon(p, q, base=2) ** 2, abs=1e-12)


def test_js_with_zeros_matches_scipy():
    p, q = [0.5, 0.5, 0.0, 0.0], [0.0, 0.25, 0.25, 0.5]
    assert js_divergence(p, q) == pytest.approx(jensenshannon(p, q, base=2) ** 2, abs=1e-12)
    assert math.isfinite(js_divergence([1.0, 0.0], [1.0, 0.0]))


def test_js_symmetric_and_zero_for_equal():
    rng = np.random.default_rng(1)
    for _ in range(20):
        p, q = rng.dirichlet(np.ones(8)), rng.dirichlet(np.ones(8))
        assert js_divergence(p, q) == js_divergence(q, p)
        assert js_divergence(p, p.copy()) == 0.0
        assert js_divergence(list(p), tuple(p)) == 0.0


def test_js_bounds():
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    assert js_divergence([1, 0, 0], [0, 0.5, 0.5]) <= 1.0
    assert js_divergence([1, 0], [0, 1], base=math.e) == pytest.approx(math.log(2))
    rng = np.random.default_rng(2)
    for _ in range(50):
        v = js_divergence(rng.dirichlet(np.ones(5) * 0.1), rng.dirichlet(np.ones(5) * 0.1))
        assert 0.0 <= v <= 1.0


def test_js_scales_unnormalised_inputs_like_scipy():
    p, q = [2.0, 2.0, 4.0], [1.0, 3.0, 1.0]
    assert js_divergence(p, q) == pytest.approx(jensenshannon(p, q, base=2) ** 2, abs=1e-12)


@pytest.mark.parametrize(
    "p, q, kw",
    [
        ([0.5, 0.5], [1.0, 0.0, 0.0], {}),  # lengths differ
        ([-0.1, 1.1], [0.5, 0.5], {}),  # negative
        ([0.0, 0.0], [0.5, 0.5], {}),  # zero sum
        ([float("nan"), 1.0], [0.5, 0.5], {}),  # not finite
        ([], [], {}),  # empty
        ([0.5, 0.5], [0.5, 0.5], {"base": 1}),  # bad base
    ],
)
def test_js_rejects_invalid(p, q, kw):
    with pytest.raises(ValueError):
        js_divergence(p, q, **kw)


def test_top_k_excludes_none_and_breaks_ties_by_order():
    assert top_k_ops(("none", "a", "b", "c"), [0.7, 0.1, 0.1, 0.1], 2) == ("a", "b")
    assert top_k_ops(("none", "a", "b", "c"), [0.1, 0.2, 0.3, 0.4], 5) == ("c", "b", "a")


# ---------------------------------------------------------------- StabilityTest


def run(test: StabilityTest, dists, key="e", ops=OPS, k=None) -> list[EdgeStatus]:
    return [test.update(key, ops, d, k=k) for d in dists]


def test_constant_distribution_stable_after_window_plus_patience():
    d = softmax(np.linspace(0, 2, len(OPS)))
    for window in (1, 3):
        test = StabilityTest(TAU, patience=3, window=window, top_k=3)
        out = run(test, [d] * (window + 3))
        # Warm-up: nothing to compare with for the first `window` checks.
        assert all(s.js is None and s.count == 0 and not s.stable for s in out[:window])
        assert [s.count for s in out[window:]] == [1, 2, 3]
        assert [s.stable for s in out[window:]] == [False, False, True]
        assert out[-1].js == 0.0 and out[-1].seen == window + 3


def test_oscillating_never_stable():
    a, b = softmax([0, 1, 2, 0, 0, 0, 0, 0]), softmax([0, 2, 1, 0, 0, 0, 0, 0])
    test = StabilityTest(TAU, patience=2, top_k=3)
    out = run(test, [a, b] * 20)
    assert js_divergence(a, b) > TAU
    assert not any(s.stable for s in out) and all(s.count == 0 for s in out)


def test_patience_counts_consecutive_checks_only():
    d = softmax(np.linspace(0, 2, len(OPS)))
    jump = softmax(np.linspace(2, 0, len(OPS)))
    test = StabilityTest(TAU, patience=3, top_k=3)
    out = run(test, [d, d, d, jump, jump, jump])
    assert [s.count for s in out] == [0, 1, 2, 0, 1, 2]
    assert not any(s.stable for s in out)
    assert test.update("e", OPS, jump).stable


def test_slow_drift_caught_by_a_longer_window():
    # A logit drifting by 0.05 per check: each step is under tau, five add up over it.
    dists = [softmax([0, 3.0 + 0.05 * t, 2, 1, 0, 0, 0, 0]) for t in range(40)]
    assert js_divergence(dists[1], dists[0]) < TAU < js_divergence(dists[5], dists[0])
    assert run(StabilityTest(TAU, patience=3, window=1, top_k=3), dists)[-1].stable
    assert not any(s.stable for s in run(StabilityTest(TAU, patience=3, window=5, top_k=3), dists))


def test_near_uniform_reordering_is_not_stable():
    # Adam moves every logit by ~lr per step whatever the gradient: at
    # lr=6e-4 and 50 steps between checks, near uniform the divergence of a
    # full-speed move is far below tau, yet the ranking keeps changing.
    lr, steps = 6e-4, 50
    slopes = np.array([0.0, 1.0, -1.0, 0.8, -0.8, 0.6, -0.6, 0.4])
    start = np.array([0.0, -0.06, 0.06, -0.045, 0.045, -0.03, 0.03, 0.0])
    dists = [softmax(start + slopes * lr * steps * t) for t in range(4)]
    js = [js_divergence(b, a) for a, b in zip(dists, dists[1:])]
    assert max(js) < TAU  # the divergence alone would call it stable
    tops = [top_k_ops(OPS, d, 3) for d in dists]
    assert len({frozenset(t) for t in tops}) > 1  # still reordering
    out = run(StabilityTest(TAU, patience=2, top_k=3), dists)
    assert not any(s.stable for s in out)
    # The same near-uniform distribution holding still is stable.
    still = run(StabilityTest(TAU, patience=2, top_k=3), [dists[0]] * 4)
    assert still[-1].stable


def test_top_k_uses_the_keep_target():
    # Ops 2 and 3 swap places at every check: top-1 is constant, top-3 is not.
    a = softmax([0, 3, 1.001, 1.0, 0, 0, 0, 0])
    b = softmax([0, 3, 1.0, 1.001, 0, 0, 0, 0])
    c = softmax([0, 3, 0.999, 1.002, 0, 0, 0, 0])
    seq = [a, b, a, c, a, b, a, c]
    assert run(StabilityTest(TAU, patience=3, top_k=3), seq, k=1)[-1].stable
    assert not any(s.stable for s in run(StabilityTest(TAU, patience=3, top_k=1), seq, k=2))


def test_smoothing_damps_oscillation():
    a, b = softmax([0, 1.2, 1, 0, 0, 0, 0, 0]), softmax([0, 1.5, 1, 0, 0, 0, 0, 0])
    assert js_divergence(a, b) > TAU
    assert not any(s.stable for s in run(StabilityTest(TAU, patience=3, top_k=3), [a, b] * 20))
    smoothed = run(StabilityTest(TAU, patience=3, smoothing=0.9, top_k=3), [a, b] * 20)
    assert smoothed[-1].stable


def test_reset_and_op_change_restart_history():
    d = softmax(np.linspace(0, 2, len(OPS)))
    test = StabilityTest(TAU, patience=1, top_k=3)
    assert run(test, [d, d])[-1].stable
    test.reset("e")
    first = test.update("e", OPS, d)
    assert first.js is None and first.count == 0 and first.seen == 1
    assert test.update("e", OPS, d).stable
    # Fewer ops (the edge was pruned without a reset): a fresh start.
    after = test.update("e", OPS[4:], d[4:])
    assert after.js is None and after.seen == 1


def test_keys_are_independent():
    d = softmax(np.linspace(0, 2, len(OPS)))
    test = StabilityTest(TAU, patience=1, top_k=3)
    test.update("a", OPS, d)
    assert test.update("b", OPS, d).js is None
    assert test.update("a", OPS, d).stable
    assert test.keys() == ["a", "b"]


def test_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(3)
    dists = [softmax(np.linspace(0, 2, 8) + rng.normal(0, 0.01, 8)) for _ in range(12)]
    full = StabilityTest(TAU, patience=2, window=2, smoothing=0.5, top_k=3)
    ref = run(full, dists)
    part = StabilityTest(TAU, patience=2, window=2, smoothing=0.5, top_k=3)
    run(part, dists[:5])
    resumed = StabilityTest(TAU, patience=2, window=2, smoothing=0.5, top_k=3)
    resumed.load_state_dict(json.loads(json.dumps(part.state_dict())))
    assert run(resumed, dists[5:]) == ref[5:]
    with pytest.raises(ValueError, match="tau"):
        StabilityTest(2 * TAU, patience=2, window=2, smoothing=0.5, top_k=3).load_state_dict(part.state_dict())


@pytest.mark.parametrize(
    "kw",
    [
        {"tau": 0.0, "patience": 1},
        {"tau": TAU, "patience": 0},
        {"tau": TAU, "patience": 1, "window": 0},
        {"tau": TAU, "patience": 1, "smoothing": 1.0},
        {"tau": TAU, "patience": 1, "top_k": 0},
    ],
)
def test_invalid_settings_raise(kw):
    with pytest.raises(ValueError):
        StabilityTest(**kw)


def test_update_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="ops"):
        StabilityTest(TAU, 1).update("e", OPS[:3], [0.5, 0.5])


def test_full_speed_js_scales_with_steps_and_bounds_real_moves():
    import numpy as np

    from iac.nas.stability import full_speed_js, js_divergence

    lr = 6e-4
    small, large = full_speed_js(lr, 50, 8), full_speed_js(lr, 200, 8)
    # Small moves: the divergence grows with the square of the distance moved.
    assert 12 < large / small < 17
    # Any move of at most lr per step and logit stays below the full-speed bound.
    rng = np.random.default_rng(0)
    p = np.full(8, 1 / 8)
    for _ in range(50):
        shift = rng.uniform(-1, 1, 8) * lr * 50
        q = np.exp(shift) / np.exp(shift).sum()
        assert js_divergence(p, q) <= small * 1.0001
    assert full_speed_js(lr, 50, 1) == 0.0


# ---------------------------------------------------------------- the sequential criterion

ERROR, EFFECT = 0.05, 80.0
# Per-check standard deviation of a logit's move at the default cadence (Adam, noise-dominated: ~lr * sqrt(50)).
STEP_SD = 6e-4 * math.sqrt(50)


def walk(rng, n_checks, drift, sd=STEP_SD):
    """Distributions of a random walk of the logits; op 1 drifts up by ``drift`` per check."""
    steps = rng.normal(0.0, sd, (n_checks, len(OPS)))
    steps[:, 1] += drift
    return [softmax(row) for row in np.cumsum(steps, axis=0)]


def test_mixture_bound_is_a_confidence_sequence():
    # Known unit variance per look: a driftless walk crosses +-bound at any of 400 looks at most `error` of the time.
    from iac.nas.stability import mixture_bound

    rng = np.random.default_rng(0)
    n = np.arange(1, 401)
    bound = np.array([mixture_bound(v, ERROR, 0.3) for v in n])
    paths = np.cumsum(rng.standard_normal((4000, n.size)), axis=1)
    crossed = np.mean(np.any(np.abs(paths) >= bound, axis=1))
    assert 0.0 < crossed <= ERROR  # two-sided, each side at most error / 2 in theory
    # A fixed-sample 1.96 threshold is crossed far more often when looked at every step.
    assert np.mean(np.any(np.abs(paths) >= 1.96 * np.sqrt(n), axis=1)) > 4 * ERROR


def test_indifference_bound_catches_noise_not_drift():
    from iac.nas.stability import indifference_bound, mixture_bound

    assert indifference_bound(0.0, ERROR, EFFECT) == pytest.approx(-math.log(1 / ERROR) / EFFECT)
    v0 = 2 * math.log(1 / ERROR) / EFFECT**2  # where it turns positive
    assert indifference_bound(v0, ERROR, EFFECT) == pytest.approx(0.0, abs=1e-12)
    # A margin drifting at the full `effect` per unit variance stays above it and ends above the mixture bound.
    v = np.linspace(0, 50 * v0, 200)
    assert all(EFFECT * x > indifference_bound(x, ERROR, EFFECT) for x in v)
    assert EFFECT * v[-1] > mixture_bound(v[-1], ERROR, EFFECT)
    with pytest.raises(ValueError, match="error"):
        mixture_bound(1.0, 1.0, EFFECT)
    with pytest.raises(ValueError, match="effect"):
        indifference_bound(1.0, ERROR, 0.0)


def test_margin_evidence_is_shift_invariant_and_keeps_survivors():
    from iac.nas.stability import MarginEvidence

    rng = np.random.default_rng(1)
    dists = walk(rng, 6, 0.0)
    ev, shifted = MarginEvidence(ERROR, EFFECT), MarginEvidence(ERROR, EFFECT)
    for d in dists:
        ev.observe("e", OPS, d)
        # A common shift of the logits renormalises to the same distribution; scaling the
        # probabilities changes every log p by the same constant.
        shifted.observe("e", OPS, d * 7.0)
    s, v = ev.margin("e", OPS[1], OPS[2])
    assert s == pytest.approx(math.log(dists[-1][1] / dists[-1][2]), abs=1e-12)
    steps = np.diff(np.log([[d[1] / d[2]] for d in [np.full(8, 1 / 8)] + dists]), axis=0).ravel()
    assert v == pytest.approx(np.var(steps, ddof=1) * steps.size, rel=1e-9)
    assert shifted.margin("e", OPS[1], OPS[2]) == pytest.approx((s, v))
    # Pruned to a subset: the survivors' margins carry on; a foreign op list restarts.
    ev.observe("e", OPS[1:4], dists[-1][1:4] / dists[-1][1:4].sum())
    s2, _ = ev.margin("e", OPS[1], OPS[2])
    assert s2 == pytest.approx(s, abs=1e-12)
    ev.observe("e", ("a", "b"), [0.5, 0.5])
    assert ev.margin("e", "a", "b") == (0.0, None)


def decision_check(test, dists, k=1):
    for n, d in enumerate(dists, 1):
        s = test.update("e", OPS, d, k=k)
        if s.stable:
            return n, s
    return None, s


def test_sequential_decides_a_clear_leader_fast_and_waits_on_a_weak_one():
    from iac.nas.stability import SequentialMarginTest

    rng = np.random.default_rng(2)
    times = {}
    for drift in (0.03, 0.006):  # full speed (2 lr x 50 steps / 2), a fifth of it
        runs = [decision_check(SequentialMarginTest(ERROR, EFFECT), walk(rng, 200, drift)) for _ in range(20)]
        assert all(n is not None and s.top == (OPS[1],) and not s.no_preference for n, s in runs)
        times[drift] = np.median([n for n, _ in runs])
    assert times[0.03] <= 4  # margins of ~0.06 logit per check settle in a few checks
    assert times[0.006] > 2 * times[0.03]


def test_sequential_calls_pure_noise_no_preference_and_logs_it():
    from iac.nas.stability import SequentialMarginTest

    rng = np.random.default_rng(3)
    out = [decision_check(SequentialMarginTest(ERROR, EFFECT), walk(rng, 400, 0.0)) for _ in range(20)]
    decided = [s for n, s in out if n is not None]
    assert len(decided) >= 18
    flagged = [s for s in decided if s.no_preference]
    assert len(flagged) >= 0.8 * len(decided)
    assert flagged[0].to_dict()["no_preference"] is True and flagged[0].js is None
    # Noise needs a margin variance of about 2 ln(1/error) / effect**2 before it is called: not the first checks.
    v0 = 2 * math.log(1 / ERROR) / EFFECT**2
    assert min(n for n, _ in out if n is not None) > 0.5 * v0 / (2 * STEP_SD**2)


def test_sequential_nothing_outside_the_top_is_stable_at_once():
    from iac.nas.stability import SequentialMarginTest

    s = SequentialMarginTest(ERROR, EFFECT).update("n", ["0->2", "1->2"], [0.4, 0.6], k=2)
    assert s.stable and not s.no_preference and s.evidence is None and s.top == ("1->2", "0->2")


def test_sequential_reset_keeps_the_evidence_and_state_round_trips():
    from iac.nas.stability import SequentialMarginTest

    rng = np.random.default_rng(4)
    dists = walk(rng, 30, 0.01)
    ref = SequentialMarginTest(ERROR, EFFECT, top_k=3)
    expected = [ref.update("e", OPS, d) for d in dists]
    part = SequentialMarginTest(ERROR, EFFECT, top_k=3)
    for d in dists[:10]:
        part.update("e", OPS, d)
    resumed = SequentialMarginTest(ERROR, EFFECT, top_k=3)
    resumed.load_state_dict(json.loads(json.dumps(part.state_dict())))
    assert [resumed.update("e", OPS, d) for d in dists[10:]] == expected[10:]
    # A reset (after pruning) restarts the decision, not the evidence: the next check equals the unreset one's.
    resumed.reset("e")
    after, unreset = resumed.update("e", OPS, dists[0]), ref.update("e", OPS, dists[0])
    assert after.seen == 1 and unreset.seen == len(dists) + 1
    assert (after.evidence, after.stable) == (unreset.evidence, unreset.stable)
    with pytest.raises(ValueError, match="effect"):
        SequentialMarginTest(ERROR, 2 * EFFECT, top_k=3).load_state_dict(part.state_dict())
    with pytest.raises(ValueError, match="top_k"):
        SequentialMarginTest(ERROR, EFFECT, top_k=0)


def test_factory_keeps_the_js_decisions_and_flags_noise_cuts():
    from iac.config import StabilityConfig
    from iac.nas.stability import SequentialMarginTest, make_stability_test

    cfg = StabilityConfig(criterion="sequential", seq_error=0.01, seq_effect=50.0, seq_miss=0.2)
    seq = make_stability_test(cfg, top_k=3)
    assert isinstance(seq, SequentialMarginTest)
    assert (seq.evidence.error, seq.evidence.effect, seq.evidence.miss) == (0.01, 50.0, 0.2)
    js = make_stability_test(StabilityConfig(tau=TAU, patience=2), top_k=3)
    plain = StabilityTest(TAU, patience=2, top_k=3)
    rng = np.random.default_rng(5)
    dists = walk(rng, 40, 0.0)
    flagged = []
    for d in dists:
        a, b = js.update("e", OPS, d), plain.update("e", OPS, d)
        assert (a.js, a.stable, a.count, a.top) == (b.js, b.stable, b.count, b.top)
        flagged.append(a.no_preference)
        assert a.no_preference <= a.stable  # only a cut can be flagged
    assert any(flagged)  # tiny noisy moves pass the JS test: those cuts show no preference
    with pytest.raises(ValueError, match="criterion"):
        make_stability_test(type("Cfg", (), {"criterion": "kl"})(), top_k=1)


def test_miss_moves_only_the_no_preference_exit():
    from iac.nas.stability import SequentialMarginTest

    rng = np.random.default_rng(6)
    noise = [walk(rng, 400, 0.0) for _ in range(10)]
    strong = [walk(rng, 100, 0.03) for _ in range(10)]

    def checks(miss, runs):
        return [decision_check(SequentialMarginTest(ERROR, EFFECT, miss=miss), d)[0] or len(d) for d in runs]

    # A larger miss rate gives up on noise sooner; a clear leader is shown worse-than at the same checks.
    assert np.median(checks(0.3, noise)) < np.median(checks(0.01, noise))
    assert checks(0.3, strong) == checks(0.01, strong)


def test_policy_with_the_sequential_test_resumes_from_a_json_checkpoint():
    from iac.config import StabilityConfig
    from iac.nas.genotype import SearchSpace
    from iac.nas.pruning import JSStabilityPruning

    space = SearchSpace(ops=OPS, nodes=1, n_inputs=1, steps_per_node=1)
    cfg = StabilityConfig(criterion="sequential")
    rng = np.random.default_rng(7)
    dists = walk(rng, 40, 0.004)

    def record(n, policy):
        ops = policy.surviving_ops(0, 0) or OPS
        p = np.array([dists[n][OPS.index(op)] for op in ops])
        edge = {"edge": "0->1", "ops": list(ops), "alpha": list(p / p.sum()), "beta": 1.0, "alive": True}
        return {"check": n + 1, "epoch": 0, "arch_step": 50 * (n + 1), "archs": [{"edges": [edge]}]}

    ref = JSStabilityPruning(space, cfg)
    events = [ref.observe(record(n, ref)) for n in range(len(dists))]
    assert ref.decided(0, 0) and ref.surviving_ops(0, 0) == (OPS[1],)
    split = 7  # after the first cut (8 -> 3), before the last: the evidence crosses a pruning and a checkpoint
    assert any(events[:split]) and any(events[split:])
    part = JSStabilityPruning(space, cfg)
    for n in range(split):
        part.observe(record(n, part))
    resumed = JSStabilityPruning(space, cfg)
    resumed.load_state_dict(json.loads(json.dumps(part.state_dict())))
    assert [resumed.observe(record(n, resumed)) for n in range(split, len(dists))] == events[split:]
