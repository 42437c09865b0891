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
