"""The study's sequence of steps, with every step runner replaced by a recorder.

The end-to-end run of ``main`` against MLflow is in ``tests/commands/test_main.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from iac.config import MainConfig
from iac.study import driver
from iac.study.cache import STEP_KEY_TAG, STUDY_TAG, StepOutcome
from iac.tracking import MemoryTracker


class FakeCache:
    """Launches every step (nothing is reused) and logs each call as the step cache does."""

    def __init__(self, experiment_id: str, code: str, echo, claim_timeout: float = 60.0) -> None:
        self.log: list[dict] = []

    def run(self, step, label, params, launch, validate=None):
        outputs = launch({STEP_KEY_TAG: f"key-{len(self.log)}"}, None)
        self.log.append({"step": label, "run_id": outputs["run_id"], "reused": False, "seconds": 0.0})
        return StepOutcome(outputs, False, 0.0)


class Runners:
    """Stand-ins for the step runners of ``iac.commands``: each returns outputs and records its call."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.calls: list[tuple] = []
        self.tags: list[dict] = []

    def _out(self, kind: str, tags: dict, **extra) -> dict:
        self.tags.append(tags)
        return {"run_id": f"{kind}-{len(self.calls) - 1}", **extra}

    def prepare(self, cfg, tags):
        self.calls.append(("prepare", cfg.dataset))
        return self._out("prepare", tags, data=str(self.data), fingerprint="fp", name=cfg.dataset)

    def retrain(self, cfg, tags, resume_run=None):
        self.calls.append(("retrain", cfg.skip, cfg.epochs, cfg.pretrained, cfg.genotype, cfg.seed))
        return self._out("retrain", tags, model_uri=f"models:/u/{len(self.calls)}")

    def search(self, cfg, method, stability, tags, resume_run=None, reference_run=None):
        self.calls.append(("search", method, cfg.seed, cfg.pretrained, reference_run))
        return self._out(f"search_{method}", tags, cell_uri=f"models:/c/{len(self.calls)}")

    def random_cell(self, cfg, tags):
        self.calls.append(("random", cfg.seed))
        return self._out("random", tags, cell_uri=f"models:/c/{len(self.calls)}")

    def evaluate(self, cfg, tags):
        self.calls.append(("evaluate", cfg.model, cfg.split))
        return self._out("evaluate", tags, dice=0.5)

    def stats(self, cfg, eval_ids, tags):
        self.calls.append(("stats", tuple(eval_ids)))
        return self._out("stats", tags)


@pytest.fixture
def study(monkeypatch, tmp_path):
    """Run a two-seed study with one skip baseline on the recorders."""
    runners = Runners(tmp_path / "prepared")
    monkeypatch.setattr(driver, "StepCache", FakeCache)
    monkeypatch.setattr(driver, "code_version", lambda: "code-test")
    monkeypatch.setattr(driver, "prepare_step", runners.prepare)
    monkeypatch.setattr(driver, "run_retrain", runners.retrain)
    monkeypatch.setattr(driver, "run_search_step", runners.search)
    monkeypatch.setattr(driver, "run_random_cell", runners.random_cell)
    monkeypatch.setattr(driver, "run_evaluate", runners.evaluate)
    monkeypatch.setattr(driver, "run_stats", runners.stats)
    monkeypatch.setattr(driver, "write_report", lambda *a: tmp_path / "report.md")
    printed: list[str] = []
    cfg = MainConfig(budget="smoke", seeds=(0, 1), skips=("attention",), report_dir=tmp_path)
    result = driver.run_study(cfg, "exp", "main-run", MemoryTracker(), echo=printed.append)
    return {"result": result, "runners": runners, "printed": printed}


def test_steps_run_in_the_study_order(study):
    labels = [s["step"] for s in study["result"].steps]
    per_seed = lambda s: [  # noqa: E731 - a table of the labels of one seed
        f"search_full (seed {s})", f"search_lth (seed {s})", f"random cell (seed {s})",
        f"U-Net + full cell (seed {s})", f"U-Net + lth cell (seed {s})", f"U-Net + random cell (seed {s})",
    ]
    evaluations = [
        "evaluate identity (test)", "evaluate identity-extra (test)", "evaluate attention (test)",
        *(f"evaluate iac-{m}/seed{s} ({split})" for s in (0, 1) for m in ("full", "lth", "random") for split in ("test", "val")),
    ]
    assert labels == [
        "prepare", "baseline U-Net", "plain U-Net, extra epochs", "attention skips",
        *per_seed(0), *per_seed(1), *evaluations, "stats",
    ]


def test_variants_start_from_the_baseline_and_cells_from_their_search(study):
    calls = study["runners"].calls
    base = "models:/u/2"  # the baseline is the second call, after prepare
    assert calls[1] == ("retrain", "identity", 1, None, None, 0)
    assert calls[2] == ("retrain", "identity", 1, base, None, 0) and calls[3] == ("retrain", "attention", 1, base, None, 0)
    searches = [c for c in calls if c[0] == "search"]
    full = {c[2]: calls.index(c) for c in searches if c[1] == "full"}
    for c in searches:
        assert c[3] == base
        assert c[4] == (f"search_full-{full[c[2]]}" if c[1] == "lth" else None)  # LTH compares with its seed's full search
    models = study["result"].outputs["models"]
    assert list(models) == [
        "identity", "identity-extra", "attention", *(f"iac-{m}/seed{s}" for s in (0, 1) for m in ("full", "lth", "random"))
    ]
    cells = [c for c in calls if c[0] == "retrain" and c[1] == "iac"]
    cell_uris = [study["result"].outputs["searches"][f"{m}-{s}"]["cell_uri"] for s in (0, 1) for m in ("full", "lth", "random")]
    assert [c[4] for c in cells] == cell_uris and all(c[3] == base for c in cells)


def test_stats_compare_the_test_evaluations_only(study):
    out = study["result"].outputs
    stats_call = study["runners"].calls[-1]
    assert stats_call == ("stats", tuple(sorted(e["run_id"] for e in out["evaluations"].values())))
    tested = [c for c in study["runners"].calls if c[0] == "evaluate" and c[2] == "test"]
    assert len(tested) == len(out["evaluations"]) == len(out["models"])


def test_every_step_is_tagged_with_the_study_and_its_key(study):
    tags = study["runners"].tags
    assert len(tags) == len(study["result"].steps)
    assert tags == [{STUDY_TAG: "main-run", STEP_KEY_TAG: f"key-{i}"} for i in range(len(tags))]


def test_a_smoke_budget_says_so(study):
    assert study["printed"] == [
        "budget 'smoke': a smoke-sized study (baseline 1 epochs, +1 per variant, full search 3 epochs); "
        "use -P budget=paper on a GPU host for the paper's budgets"
    ]
    assert study["result"].outputs["fingerprint"] == "fp"
