"""The one search loop: resume determinism, live-versus-replay agreement, stop rule.

A tiny prepared phantom, a tiny U-Net and a 2-node cell keep each search to
about a second on a CPU. The LTH settings bind: ``tau`` is at most 0.6 of the
divergence an edge moving at Adam's full speed produces between two checks
(``full_speed_js``), so the stability condition fails at some checks and
passes at others, as in a real search.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from iac.config import DARTS_OPS, SearchConfig, StabilityConfig
from iac.nas.stability import full_speed_js

CFG = dict(epochs=5, warmup_epochs=1, max_slices_per_epoch=8, batch_size=4, cell_channels=4, nodes=2, device="cpu",
           check_every=1)
FULL_SPEED = full_speed_js(SearchConfig.arch_lr, CFG["check_every"], len(DARTS_OPS))
LTH = StabilityConfig(tau=0.5 * FULL_SPEED, patience=1, window=1)
# Cut each stable edge to one operation at once, so the tiny search decides everything in a few dozen checks.
STOPPING = StabilityConfig(tau=0.6 * FULL_SPEED, patience=1, window=1, keep_schedule=(1,))
STOP_EPOCHS = 30


def _condition_failed(trajectory, tau: float) -> int:
    """Tests (edges or nodes) at which the divergence was at or above ``tau``."""
    return sum(1 for c in trajectory["checks"] for st in (c.get("status") or {}).values()
               if st.get("js") is not None and st["js"] >= tau)


@pytest.fixture
def data(tiny_phantom):
    return tiny_phantom


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    """Tiny searches run faster, and steadier on shared cores, on one thread."""


def _unet(data):
    from iac.models import create_backbone

    torch.manual_seed(0)
    return create_backbone("unet", data.in_channels, data.num_classes)


def _policy(kind: str, cfg: SearchConfig, stability: StabilityConfig = LTH):
    from iac.nas.genotype import SearchSpace
    from iac.nas.pruning import JSStabilityPruning, NoPruning

    return NoPruning() if kind == "full" else JSStabilityPruning(SearchSpace.from_config(cfg), stability)


def _search(data, kind: str, ckpt: Path | None, epochs: int | None = None, stability: StabilityConfig = LTH, **kw):
    from iac.nas.search import run_search

    cfg = SearchConfig(data=data.root, **{**CFG, **({"epochs": epochs} if epochs else {})})
    return run_search(cfg, _unet(data), data, _policy(kind, cfg, stability), checkpoint_path=ckpt, progress=False,
                      **kw)


@pytest.fixture(scope="module")
def stopping_lth(tiny_phantom):
    """An LTH search that decides every edge and stops before its budget."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster on shared cores
    yield _search(tiny_phantom, "lth", None, epochs=STOP_EPOCHS, stability=STOPPING)
    torch.set_num_threads(threads)


@pytest.mark.parametrize("kind", ["full", "lth"])
def test_interrupted_then_resumed_search_equals_uninterrupted(data, tmp_path, kind):
    from iac.train.checkpoint import load_checkpoint

    whole = _search(data, kind, tmp_path / "whole.pt")
    if kind == "lth":
        assert _condition_failed(whole.trajectory, LTH.tau) > 0, "tau must bind"
    first = _search(data, kind, tmp_path / "cut.pt", stop_after_epochs=2)
    assert first.epochs_run == 2
    resumed = _search(data, kind, tmp_path / "cut.pt", resume_from=tmp_path / "cut.pt")

    assert resumed.genotype == whole.genotype
    assert resumed.epochs_run == whole.epochs_run
    assert resumed.pruning_log == whole.pruning_log
    strip = lambda cs: [{k: v for k, v in c.items()} for c in cs]  # noqa: E731
    assert strip(resumed.trajectory["checks"]) == strip(whole.trajectory["checks"])
    # Every epoch record, the killed run's last one included, carries its timing.
    cum = [e["cum_seconds"] for e in resumed.trajectory["epochs"]]
    assert all(e["epoch_seconds"] > 0 for e in resumed.trajectory["epochs"]) and cum == sorted(cum)
    assert resumed.search_seconds == pytest.approx(cum[-1])
    a, b = load_checkpoint(tmp_path / "whole.pt")["model"], load_checkpoint(tmp_path / "cut.pt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_lth_prunes_stops_early_and_later_epochs_are_cheaper(stopping_lth):
    lth = stopping_lth
    assert lth.pruning_log
    assert _condition_failed(lth.trajectory, STOPPING.tau) > 0, "tau must bind"
    assert lth.stopped_early and lth.epochs_run < STOP_EPOCHS
    first = lth.trajectory["epochs"][0]["surviving_ops"]
    last = lth.trajectory["epochs"][-1]["surviving_ops"]
    assert last < first
    assert lth.trajectory["epochs"][-1]["params"] < lth.trajectory["epochs"][0]["params"]


def test_offline_replay_reproduces_the_live_search(stopping_lth):
    from iac.nas.replay import replay

    live = stopping_lth
    rep = replay(live.trajectory, cfg=STOPPING)
    assert rep.stopped
    assert rep.genotype == live.genotype
    assert [e.to_dict() for e in rep.events] == live.pruning_log
    assert rep.stop_epoch == live.trajectory["epochs"][-1]["epoch"]


def test_short_run_clamps_warmup_with_a_warning(data):
    from iac.nas.search import effective_warmup

    cfg = SearchConfig(data=data.root, epochs=4, warmup_epochs=15)
    with pytest.warns(UserWarning, match="warmup_epochs=15"):
        assert effective_warmup(cfg) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert effective_warmup(replace(cfg, epochs=200)) == 15


def test_weight_and_architecture_halves_are_disjoint_patients(data):
    from iac.data.splits import split_search_halves

    w, a = split_search_halves(data.patients("train"), seed=0)
    assert w and a and not set(w) & set(a)
    assert sorted(w + a) == sorted(data.patients("train"))
    assert split_search_halves(data.patients("train"), seed=0) == (w, a)


def test_a_checkpoint_of_another_kind_is_refused(data, tmp_path):
    from iac.train.checkpoint import CheckpointError, save_checkpoint

    save_checkpoint(tmp_path / "other.pt", {"kind": "iac.train.Trainer", "version": 1})
    with pytest.raises(CheckpointError, match="not a search checkpoint"):
        _search(data, "full", tmp_path / "x.pt", resume_from=tmp_path / "other.pt")


def test_pc_darts_choices_run_and_resume_exactly(data, tmp_path):
    from iac.nas.search import run_search

    pc_darts = dict(step_order="arch_first", w_optimizer="sgd", w_lr=0.1, w_grad_clip=5.0)

    def search(ckpt, **kw):
        cfg = SearchConfig(data=data.root, **{**CFG, "epochs": 3, **pc_darts})
        return run_search(cfg, _unet(data), data, _policy("full", cfg), checkpoint_path=ckpt, progress=False, **kw)

    whole = search(tmp_path / "w.pt")
    search(tmp_path / "c.pt", stop_after_epochs=2)
    resumed = search(tmp_path / "c.pt", resume_from=tmp_path / "c.pt")
    assert resumed.trajectory["checks"] == whole.trajectory["checks"]
    # Every check carries the alpha-gradient statistics of the steps since the previous one.
    edge = whole.trajectory["checks"][-1]["archs"][0]["edges"][0]
    assert len(edge["grad_mean"]) == len(edge["grad_var"]) == len(edge["ops"])
