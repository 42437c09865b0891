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
from iac.data.manifest import manifest_or_none
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

    def train_config(self, skip: str, epochs: int, pretrained: str | None, genotype: str | None, seed: int) -> TrainConfig:
        """Settings of one U-Net's training: the baseline at the budget's ``baseline_lr``, the rest at ``extra_lr``."""
        lr = self.budget.extra_lr if pretrained else self.budget.baseline_lr
        return TrainConfig(
            data=self.data,
            backbone=self.cfg.backbone,
            skip=skip,
            genotype=genotype,
            epochs=epochs,
            seed=seed,
            pretrained=pretrained,
            device=self.cfg.device,
            max_slices_per_epoch=self.budget.max_slices_per_epoch,
            **({"lr": lr} if lr is not None else {}),
        )

    def train(self, label: str, skip: str, epochs: int, pretrained: str | None, genotype: str | None, seed: int) -> dict:
        """Train (and register) one U-Net."""
        tcfg = self.train_config(skip, epochs, pretrained, genotype, seed)
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
            **({"cell_channels": self.budget.cell_channels} if self.budget.cell_channels else {}),
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

    ``prepare`` runs here; the other steps form a graph (:func:`study_graph`)
    that the executor runs: one after another in this process (``local``), or
    as Ray tasks in dependency order (``ray``, :mod:`iac.study.executors`).

    Args:
        cfg: the study's settings.
        experiment_id: the experiment whose runs the step cache searches.
        study_run_id: the ``main`` run (tagged on every step).
        tracker: the ``main`` run's tracker (the report is logged there).
        echo: where progress lines go (the ``main`` command prints them).
    """
    from iac.study.executors import make_executor

    t_start = time.perf_counter()
    budget = resolve_budget(cfg)
    cache = StepCache(experiment_id, code_version(), echo=echo, claim_timeout=cfg.claim_timeout)
    tags = {STUDY_TAG: study_run_id}
    if cfg.budget in ("smoke", "quick"):
        echo(
            f"budget '{cfg.budget}': a smoke-sized study (baseline {budget.baseline_epochs} epochs, "
            f"+{budget.extra_epochs} per variant, full search {budget.search_epochs} epochs); "
            "use -P budget=paper on a GPU host for the paper's budgets"
        )
    with make_executor(cfg, echo) as executor:
        prep = _prepare(cfg, budget, cache, tags)
        steps = StudySteps(cfg, budget, cache, tags, Path(prep["data"]), prep["fingerprint"])
        done = executor.run(study_graph(steps), steps)

    models = {n.output: done[n.name]["model_uri"] for n in study_graph(steps) if n.output and n.kind == "model"}
    searches = {n.output: done[n.name] for n in study_graph(steps) if n.kind == "cell"}
    evals = {n.output: done[n.name] for n in study_graph(steps) if n.kind == "evaluation"}
    seconds = time.perf_counter() - t_start
    outputs = {
        "data": str(steps.data), "fingerprint": steps.fingerprint, "models": models,
        "searches": searches, "evaluations": evals, "stats": done["stats"],
    }
    report = write_report(cfg, budget, outputs, cache.log, seconds, Path(cfg.report_dir), tracker)
    return StudyResult(outputs=outputs, report=report, steps=cache.log, seconds=seconds)


@dataclass(frozen=True)
class Node:
    """One step of the study graph.

    Attributes:
        name: unique name; ``deps`` and the results refer to it.
        deps: the nodes whose outputs the step needs (run before it).
        call: ``call(steps, outputs of deps by name) -> outputs``; runs the step through the step cache.
        kind: ``model`` (a trained U-Net), ``cell``, ``evaluation`` (on test), or ``other``.
        output: the key of the result in the study's ``models`` / ``searches`` / ``evaluations``.
        accelerated: whether the step trains or predicts (asks for the GPUs of a Ray task).
    """

    name: str
    deps: tuple[str, ...]
    call: Callable[["StudySteps", dict[str, dict]], dict]
    kind: str = "other"
    output: str = ""
    accelerated: bool = True


def study_graph(steps: StudySteps) -> list[Node]:
    """The steps after ``prepare``, in the order the local executor runs them (a topological order).

    baseline -> plain extra epochs and skip baselines; per seed: full search ->
    LTH search (compared with it), random cell, each cell retrained from the
    baseline; every model evaluated on test (cells also on val); stats over
    the test evaluations.
    """
    cfg, budget, seed0 = steps.cfg, steps.budget, steps.cfg.seeds[0]
    extra = budget.extra_epochs
    nodes = [
        Node("baseline", (), lambda s, d: s.train("baseline U-Net", "identity", budget.baseline_epochs, None, None, seed0),
             "model", "identity"),
        Node("identity-extra", ("baseline",), lambda s, d: s.train(
            "plain U-Net, extra epochs", "identity", extra, d["baseline"]["model_uri"], None, seed0), "model", "identity-extra"),
    ]
    nodes += [
        Node(skip, ("baseline",), _train_skip(skip, extra, seed0), "model", skip) for skip in cfg.skips
    ]
    for seed in cfg.seeds:
        nodes += [
            Node(f"full-{seed}", ("baseline",), _search(seed, "full"), "cell", f"full-{seed}"),
            Node(f"lth-{seed}", ("baseline", f"full-{seed}"), _search(seed, "lth"), "cell", f"lth-{seed}"),
            Node(f"random-{seed}", ("baseline",), _random(seed), "cell", f"random-{seed}", accelerated=False),
        ]
        nodes += [
            Node(f"iac-{m}/seed{seed}", ("baseline", f"{m}-{seed}"), _train_cell(seed, m), "model", f"iac-{m}/seed{seed}")
            for m in CELL_METHODS
        ]
    tested = []
    for n in [n for n in nodes if n.kind == "model"]:
        nodes.append(Node(f"evaluate {n.output} (test)", (n.name,), _evaluate(n.output, n.name, "test"), "evaluation", n.output))
        tested.append(nodes[-1].name)
        if n.output.startswith("iac-"):
            nodes.append(Node(f"evaluate {n.output} (val)", (n.name,), _evaluate(n.output, n.name, "val")))
    nodes.append(Node("stats", tuple(tested), lambda s, d: s.stats(sorted(d[t]["run_id"] for t in tested)),
                      accelerated=False))
    return nodes


# Node calls are module-level factories (not lambdas over loop variables) so each binds its own values.
def _train_skip(skip: str, epochs: int, seed: int):
    return lambda s, d: s.train(f"{skip} skips", skip, epochs, d["baseline"]["model_uri"], None, seed)


def _search(seed: int, method: str):
    def call(s: StudySteps, d: dict[str, dict]) -> dict:
        scfg = s.search_config(seed, d["baseline"]["model_uri"])
        reference = d[f"full-{seed}"]["run_id"] if method == "lth" else None  # LTH compares itself with its seed's full search
        return s.search(scfg, method, reference)

    return call


def _random(seed: int):
    return lambda s, d: s.random_cell(s.search_config(seed, d["baseline"]["model_uri"]))


def _train_cell(seed: int, method: str):
    return lambda s, d: s.train(
        f"U-Net + {method} cell (seed {seed})", "iac", s.budget.extra_epochs, d["baseline"]["model_uri"],
        d[f"{method}-{seed}"]["cell_uri"], seed,
    )


def _evaluate(label: str, model_node: str, split: str):
    """Every model on test; cells also on val (which writes val_dice back to the cell)."""
    return lambda s, d: s.evaluate(label, d[model_node]["model_uri"], split)


def _phantom_settings(cfg: MainConfig, budget: Budget) -> dict[str, Any]:
    """The budget's phantom cohort (only for dataset=phantom; ``prepare_options`` override each)."""
    if cfg.dataset != "phantom":
        return {}
    out = {"phantom_patients": budget.phantom_patients, "phantom_size": budget.phantom_size,
           "phantom_variant": budget.phantom_variant}
    if budget.phantom_test_fraction is not None:
        out["test_fraction"] = budget.phantom_test_fraction
    if budget.phantom_val_fraction is not None:
        out["val_fraction"] = budget.phantom_val_fraction
    return out


def _prepare(cfg: MainConfig, budget: Budget, cache: StepCache, tags: dict[str, str]) -> dict[str, Any]:
    """Prepare the dataset (reused while its folder still has a manifest), or take a prepared folder as it is."""
    data = cfg.data or Path("data/prepared") / cfg.dataset
    if cfg.prepared_as_is:
        return prepared_as_is(Path(data))
    pcfg = PrepareConfig(
        dataset=cfg.dataset,
        source=cfg.source,
        out=Path(data),
        **{**_phantom_settings(cfg, budget), **dict(cfg.prepare_options)},
    )
    return cache.run(
        "prepare",
        "prepare",
        to_dict(pcfg),
        lambda extra, _resume: prepare_step(pcfg, {**tags, **extra}),
        validate=_still_prepared,
    ).outputs


def _still_prepared(outputs: dict[str, Any]) -> bool:
    """A finished prepare step is reused only while its folder still holds the data it made.

    Another cohort prepared into the same folder since (another phantom variant
    or size) changes the manifest's fingerprint, and the step runs again.
    """
    manifest = manifest_or_none(outputs["data"])
    return manifest is not None and manifest.get("fingerprint") == outputs.get("fingerprint")
