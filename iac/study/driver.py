"""The sequence of the study for one dataset (``main``).

prepare -> baseline U-Net -> skip baselines and the same-extra-epochs control
-> full and LTH searches (per seed) and a random cell -> retrain each cell ->
evaluate every model -> stats -> report.

Each step is a child run of the ``main`` run, called directly (not through a
new ``mlflow run`` process) and looked up in the step cache first
(:mod:`iac.study.cache`), so a rerun reuses every finished step.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from iac.commands.evaluate import run_evaluate
from iac.commands.retrain import run_retrain
from iac.commands.search import run_random_cell, run_search_step
from iac.commands.stats import run_stats
from iac.config import Budget, EvalConfig, MainConfig, PrepareConfig, SearchConfig, StatsConfig, TrainConfig, to_dict
from iac.study.budget import resolve_budget
from iac.study.cache import STUDY_TAG, StepCache
from iac.study.code_version import code_version
from iac.study.prepare_step import prepare_step, prepared_as_is
from iac.study.report import write_report
from iac.tracking import Tracker

log = logging.getLogger(__name__)

# Search methods run per seed, in this order (LTH compares itself with the full search of its seed).
SEARCH_METHODS = ("full", "lth")
# Methods whose cells are retrained and evaluated (the random cell is the control).
CELL_METHODS = ("full", "lth", "random")


@dataclass
class StudyResult:
    """Outputs of every step, the report's path, the step log and the study's wall time."""

    outputs: dict[str, Any]
    report: Path
    steps: list[dict[str, Any]]
    seconds: float


@dataclass
class StudySteps:
    """The study's step calls, bound to its settings, step cache and prepared data.

    Each call goes through :meth:`StepCache.run` and returns the step's outputs.
    """

    cfg: MainConfig
    budget: Budget
    cache: StepCache
    tags: dict[str, str]
    data: Path
    fingerprint: str

    def train(self, label: str, skip: str, epochs: int, pretrained: str | None, genotype: str | None, seed: int) -> dict:
        """Train (and register) one U-Net."""
        tcfg = TrainConfig(
            data=self.data,
            backbone=self.cfg.backbone,
            skip=skip,
            genotype=genotype,
            epochs=epochs,
            seed=seed,
            pretrained=pretrained,
            device=self.cfg.device,
            max_slices_per_epoch=self.budget.max_slices_per_epoch,
        )
        params = {**to_dict(tcfg), "data_fingerprint": self.fingerprint}
        return self.cache.run(
            "retrain", label, params, lambda extra, resume: run_retrain(tcfg, {**self.tags, **extra}, resume_run=resume)
        ).outputs

    def evaluate(self, label: str, model_uri: str, split: str) -> dict:
        """Evaluate one model on one split."""
        ecfg = EvalConfig(model=model_uri, data=self.data, split=split, device=self.cfg.device)
        return self.cache.run(
            "evaluate", f"evaluate {label} ({split})", {**to_dict(ecfg), "data_fingerprint": self.fingerprint},
            lambda extra, _resume: run_evaluate(ecfg, {**self.tags, **extra}),
        ).outputs

    def search_config(self, seed: int, pretrained: str) -> SearchConfig:
        """Settings of the searches (and the random cell) of one seed."""
        return SearchConfig(
            data=self.data,
            backbone=self.cfg.backbone,
            epochs=self.budget.search_epochs,
            warmup_epochs=self.budget.warmup_epochs,
            check_every=self.budget.check_every,
            pretrained=pretrained,
            seed=seed,
            device=self.cfg.device,
            max_slices_per_epoch=self.budget.max_slices_per_epoch,
        )

    def search(self, scfg: SearchConfig, method: str, reference_run: str | None) -> dict:
        """One search (``full`` or ``lth``); LTH compares itself with ``reference_run``."""
        stability = self.budget.stability
        params = {**to_dict(scfg), "method": method, "data_fingerprint": self.fingerprint}
        if method == "lth":  # the full search never prunes: the stability settings do not change it
            params["stability"] = to_dict(stability)
        return self.cache.run(
            f"search_{method}",
            f"search_{method} (seed {scfg.seed})",
            params,
            lambda extra, resume: run_search_step(
                scfg, method, stability, {**self.tags, **extra}, resume_run=resume, reference_run=reference_run
            ),
        ).outputs

    def random_cell(self, scfg: SearchConfig) -> dict:
        """A random cell from the same search space (the control)."""
        return self.cache.run(
            "random_cell",
            f"random cell (seed {scfg.seed})",
            {**to_dict(scfg), "data_fingerprint": self.fingerprint},
            lambda extra, _resume: run_random_cell(scfg, {**self.tags, **extra}),
        ).outputs

    def stats(self, eval_ids: list[str]) -> dict:
        """Paired statistics over the given evaluation runs."""
        stcfg = StatsConfig(min_pairs=self.budget.min_pairs)
        return self.cache.run(
            "stats",
            "stats",
            {**to_dict(stcfg), "runs": eval_ids},
            lambda extra, _resume: run_stats(stcfg, eval_ids, {**self.tags, **extra}),
        ).outputs


def run_study(
    cfg: MainConfig,
    experiment_id: str,
    study_run_id: str,
    tracker: Tracker,
    echo: Callable[[str], None] = log.info,
) -> StudyResult:
    """Run (or reuse) every step of the study and write the report.

    Args:
        cfg: the study's settings.
        experiment_id: the experiment whose runs the step cache searches.
        study_run_id: the ``main`` run (tagged on every step).
        tracker: the ``main`` run's tracker (the report is logged there).
        echo: where progress lines go (the ``main`` command prints them).
    """
    t_start = time.perf_counter()
    budget = resolve_budget(cfg)
    cache = StepCache(experiment_id, code_version(), echo=echo)
    tags = {STUDY_TAG: study_run_id}
    if cfg.budget != "paper":
        echo(
            f"budget '{cfg.budget}': a smoke-sized study (baseline {budget.baseline_epochs} epochs, "
            f"+{budget.extra_epochs} per variant, full search {budget.search_epochs} epochs); "
            "use -P budget=paper on a GPU host for the paper's budgets"
        )
    prep = _prepare(cfg, budget, cache, tags)
    steps = StudySteps(cfg, budget, cache, tags, Path(prep["data"]), prep["fingerprint"])
    base_uri, models = _train_baselines(steps)
    searches: dict[str, dict] = {}
    for seed in cfg.seeds:
        searches.update(_search_seed(steps, seed, base_uri))
        models.update(_retrain_cells(steps, seed, searches, base_uri))
    evals = _evaluate_models(steps, models)
    st = steps.stats(sorted(e["run_id"] for e in evals.values()))

    seconds = time.perf_counter() - t_start
    outputs = {
        "data": str(steps.data), "fingerprint": steps.fingerprint, "models": models,
        "searches": searches, "evaluations": evals, "stats": st,
    }
    report = write_report(cfg, budget, outputs, cache.log, seconds, Path(cfg.report_dir), tracker)
    return StudyResult(outputs=outputs, report=report, steps=cache.log, seconds=seconds)


def _prepare(cfg: MainConfig, budget: Budget, cache: StepCache, tags: dict[str, str]) -> dict[str, Any]:
    """Prepare the dataset (reused while its folder still has a manifest), or take a prepared folder as it is."""
    data = cfg.data or Path("data/prepared") / cfg.dataset
    if cfg.prepared_as_is:
        return prepared_as_is(Path(data))
    pcfg = PrepareConfig(
        dataset=cfg.dataset,
        source=cfg.source,
        out=Path(data),
        **{"phantom_patients": budget.phantom_patients, "phantom_size": budget.phantom_size,
           **dict(cfg.prepare_options)},
    )
    return cache.run(
        "prepare",
        "prepare",
        to_dict(pcfg),
        lambda extra, _resume: prepare_step(pcfg, {**tags, **extra}),
        validate=lambda o: (Path(o["data"]) / "manifest.json").is_file(),
    ).outputs


def _train_baselines(steps: StudySteps) -> tuple[str, dict[str, str]]:
    """The baseline U-Net, then the plain and skip variants trained on from its weights.

    Every variant gets the same extra epochs, so the plain ``identity-extra``
    model separates the effect of the skips from that of training longer.

    Returns:
        (the baseline's model URI, method name -> model URI)
    """
    cfg, budget, seed = steps.cfg, steps.budget, steps.cfg.seeds[0]
    base = steps.train("baseline U-Net", "identity", budget.baseline_epochs, None, None, seed)["model_uri"]
    models = {"identity": base}
    models["identity-extra"] = steps.train(
        "plain U-Net, extra epochs", "identity", budget.extra_epochs, base, None, seed
    )["model_uri"]
    for skip in cfg.skips:
        models[skip] = steps.train(f"{skip} skips", skip, budget.extra_epochs, base, None, seed)["model_uri"]
    return base, models


def _search_seed(steps: StudySteps, seed: int, base_uri: str) -> dict[str, dict]:
    """The full and LTH searches and the random cell of one seed, keyed ``<method>-<seed>``."""
    scfg = steps.search_config(seed, base_uri)
    found: dict[str, dict] = {}
    for method in SEARCH_METHODS:
        reference = found.get(f"full-{seed}", {}).get("run_id") if method == "lth" else None
        found[f"{method}-{seed}"] = steps.search(scfg, method, reference)
    found[f"random-{seed}"] = steps.random_cell(scfg)
    return found


def _retrain_cells(steps: StudySteps, seed: int, searches: dict[str, dict], base_uri: str) -> dict[str, str]:
    """The baseline with each cell of one seed implanted, trained for the extra epochs."""
    models = {}
    for method in CELL_METHODS:
        cell = searches[f"{method}-{seed}"]["cell_uri"]
        models[f"iac-{method}/seed{seed}"] = steps.train(
            f"U-Net + {method} cell (seed {seed})", "iac", steps.budget.extra_epochs, base_uri, cell, seed
        )["model_uri"]
    return models


def _evaluate_models(steps: StudySteps, models: dict[str, str]) -> dict[str, dict]:
    """Every model on test; cells also on val (which writes val_dice back to the cell)."""
    evals: dict[str, dict] = {}
    for name, uri in models.items():
        evals[name] = steps.evaluate(name, uri, "test")
        if name.startswith("iac-"):
            steps.evaluate(name, uri, "val")
    return evals
