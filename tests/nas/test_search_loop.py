"""The one search loop: resume determinism, live-versus-replay agreement, stop rule.

A tiny prepared phantom, a tiny U-Net and a 2-node cell keep each search to
about a second on a CPU.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from iac.config import SearchConfig, StabilityConfig

CFG = dict(epochs=5, warmup_epochs=1, max_slices_per_epoch=8, batch_size=4, cell_channels=4, nodes=2, device="cpu",
           check_every=1)
LTH = StabilityConfig(tau=0.5, patience=1, window=1)


@pytest.fixture
def data(tiny_phantom):
    return tiny_phantom


def _unet(data):
    from iac.models import create_backbone

    torch.manual_seed(0)
    return create_backbone("unet", data.in_channels, data.num_classes)


def _policy(kind: str, cfg: SearchConfig):
    from iac.nas.pruning import JSStabilityPruning, NoPruning
    from iac.nas.genotype import SearchSpace

    return NoPruning() if kind == "full" else JSStabilityPruning(SearchSpace.from_config(cfg), LTH)


def _search(data, kind: str, ckpt: Path, epochs: int | None = None, **kw):
    from iac.nas.search import run_search

    cfg = SearchConfig(data=data.root, **{**CFG, **({"epochs": epochs} if epochs else {})})
    return run_search(cfg, _unet(data), data, _policy(kind, cfg), checkpoint_path=ckpt, progress=False, **kw)


@pytest.mark.parametrize("kind", ["full", "lth"])
def test_interrupted_then_resumed_search_equals_uninterrupted(data, tmp_path, kind):
    from iac.train.checkpoint import load_checkpoint

    whole = _search(data, kind, tmp_path / "whole.pt")
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


def test_lth_prunes_stops_early_and_later_epochs_are_cheaper(data, tmp_path):
    lth = _search(data, "lth", tmp_path / "l.pt", epochs=12)
    assert lth.pruning_log, "a loose tau must prune"
    assert lth.stopped_early and lth.epochs_run < 12
    first = lth.trajectory["epochs"][0]["surviving_ops"]
    last = lth.trajectory["epochs"][-1]["surviving_ops"]
    assert last < first
    assert lth.trajectory["epochs"][-1]["params"] < lth.trajectory["epochs"][0]["params"]


def test_offline_replay_reproduces_the_live_search(data, tmp_path):
    from iac.nas.replay import replay

    live = _search(data, "lth", tmp_path / "l.pt")
    rep = replay(live.trajectory, cfg=LTH)
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
