"""The whole study for one dataset (``main``), with reuse of finished steps.

prepare -> baseline U-Net -> skip baselines and the same-extra-epochs control
-> full and LTH searches (per seed) and a random cell -> retrain each cell ->
evaluate every model -> stats -> report.

Each step is a child run of the ``main`` run, called directly (not through a
new ``mlflow run`` process). Before a step is launched, its *step key* — a
hash of the step name, its parameters (the prepared data's fingerprint
included) and the code version (git commit, plus a hash of uncommitted
changes) — is looked up among the experiment's runs: a FINISHED run with that
key is reused (its recorded outputs are returned in milliseconds); an
unfinished one (FAILED, KILLED, or RUNNING after a crash) that left a
checkpoint is resumed; otherwise the step runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import click

from iac.config import (
    BUDGETS,
    Budget,
    EvalConfig,
    MainConfig,
    PrepareConfig,
    SearchConfig,
    StatsConfig,
    TrainConfig,
    to_dict,
)

log = logging.getLogger(__name__)

STEP_KEY_TAG = "iac_step_key"
OUTPUTS_TAG = "iac_outputs"
STUDY_TAG = "iac_study"


def resolve_budget(cfg: MainConfig) -> Budget:
    """The named budget with every per-setting override applied."""
    if cfg.budget not in BUDGETS:
        raise ValueError(f"unknown budget {cfg.budget!r}; valid: {', '.join(BUDGETS)}")
    b = BUDGETS[cfg.budget]
    stab = b.stability
    stab = replace(
        stab,
        **{
            k: getattr(cfg, k)
            for k in ("tau", "patience", "window", "check_every")
            if getattr(cfg, k) is not None
        },
    )
    over = {
        k: getattr(cfg, k)
        for k in ("baseline_epochs", "extra_epochs", "search_epochs", "warmup_epochs")
        if getattr(cfg, k) is not None
    }
    return replace(b, stability=stab, **over)


# What a step's result depends on: the package and its pinned requirements. Docs, tests and
# benchmarks can change without invalidating finished steps.
CODE_PATHS = ("iac", "pyproject.toml")


def code_version(root: Path | None = None) -> str:
    """Version of the code that computes a step: git objects of :data:`CODE_PATHS` plus their uncommitted changes.

    ``root`` is the checkout (default: the one this package lives in). Outside a
    git checkout (an installed release) it is the package version.
    """
    root = root or Path(__file__).resolve().parents[1]
    try:
        tree = subprocess.run(
            ["git", "ls-tree", "HEAD", "--", *CODE_PATHS], cwd=root, capture_output=True, check=True
        ).stdout
        diff = subprocess.run(["git", "diff", "HEAD", "--", *CODE_PATHS], cwd=root, capture_output=True, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        tree = b""
    if not tree:
        from iac import __version__

        return f"release-{__version__}"
    version = "code-" + hashlib.sha256(tree).hexdigest()[:12]
    return version + ("+" + hashlib.sha256(diff).hexdigest()[:12] if diff else "")


def step_key(step: str, params: dict[str, Any], code: str) -> str:
    blob = json.dumps({"step": step, "params": params, "code": code}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass
class StepOutcome:
    outputs: dict[str, Any]
    reused: bool
    seconds: float


@dataclass
class StepCache:
    """Finds finished or resumable runs of a step by its key."""

    experiment_id: str
    code: str
    log: list[dict[str, Any]] = field(default_factory=list)

    def run(
        self,
        step: str,
        label: str,
        params: dict[str, Any],
        launch: Callable[[dict[str, str], str | None], dict[str, Any]],
        validate: Callable[[dict[str, Any]], bool] | None = None,
    ) -> StepOutcome:
        """Reuse, resume or launch one step.

        Args:
            step: step name (``retrain``, ``search_lth``, ...).
            label: human-readable name of this particular call.
            params: every parameter that changes the step's result.
            launch: ``launch(extra_tags, resume_run_id) -> outputs`` runs the step.
            validate: checks that reused outputs still exist (e.g. a folder).
        """
        import mlflow

        key = step_key(step, params, self.code)
        t0 = time.perf_counter()
        runs = mlflow.search_runs(
            experiment_ids=[self.experiment_id],
            filter_string=f"tags.{STEP_KEY_TAG} = '{key}'",
            output_format="list",
            order_by=["attributes.start_time DESC"],
        )
        for r in runs:
            if r.info.status == "FINISHED" and OUTPUTS_TAG in r.data.tags:
                outputs = json.loads(r.data.tags[OUTPUTS_TAG])
                if validate is None or validate(outputs):
                    secs = time.perf_counter() - t0
                    click.echo(f"  = {label}: reusing finished run {r.info.run_id[:8]}")
                    self.log.append({"step": label, "run_id": r.info.run_id, "reused": True, "seconds": secs})
                    return StepOutcome(outputs, True, secs)
        resume = next(
            (r.info.run_id for r in runs if r.info.status in ("FAILED", "KILLED", "RUNNING") and _has_checkpoint(r.info.run_id)),
            None,
        )
        click.echo(f"  > {label}: {'resuming run ' + resume[:8] if resume else 'running'}")
        outputs = launch({STEP_KEY_TAG: key}, resume)
        secs = time.perf_counter() - t0
        self.log.append({"step": label, "run_id": outputs.get("run_id"), "reused": False, "seconds": secs})
        return StepOutcome(outputs, False, secs)


def _has_checkpoint(run_id: str) -> bool:
    import mlflow

    try:
        return any(a.path.endswith("last.pt") for a in mlflow.MlflowClient().list_artifacts(run_id, "checkpoints"))
    except Exception:  # noqa: BLE001 - an unreadable artifact store means: nothing to resume
        return False


def _prepare(cfg: PrepareConfig, tags: dict[str, str]) -> dict[str, Any]:
    """``prepare`` as a child run of the study; returns its outputs."""
    import mlflow

    from iac.commands.common import step_run
    from iac.commands.prepare import run_prepare

    with step_run("prepare", {"dataset": cfg.dataset, **tags}, run_name=f"prepare-{cfg.dataset}") as run:
        res = run_prepare(cfg)
        outputs = {
            "run_id": run.info.run_id,
            "data": str(Path(res.root).resolve()),
            "fingerprint": res.fingerprint,
            "name": res.manifest["name"],
        }
        mlflow.set_tag(OUTPUTS_TAG, json.dumps(outputs))
    return outputs


@dataclass
class StudyResult:
    outputs: dict[str, Any]
    report: Path
    steps: list[dict[str, Any]]
    seconds: float


def run_study(cfg: MainConfig, experiment_id: str, study_run_id: str, tracker) -> StudyResult:
    """Run (or reuse) every step of the study and write the report."""
    from iac.commands.evaluate import run_evaluate
    from iac.commands.retrain import run_retrain
    from iac.commands.search import run_random_cell, run_search_step
    from iac.commands.stats import run_stats
    from iac.report import write_report

    t_start = time.perf_counter()
    budget = resolve_budget(cfg)
    cache = StepCache(experiment_id, code_version())
    tags = {STUDY_TAG: study_run_id}
    bb = cfg.backbone
    if cfg.budget != "paper":
        click.echo(
            f"budget '{cfg.budget}': a smoke-sized study (baseline {budget.baseline_epochs} epochs, "
            f"+{budget.extra_epochs} per variant, full search {budget.search_epochs} epochs); "
            "use -P budget=paper on a GPU host for the paper's budgets"
        )
    first_seed = cfg.seeds[0]

    # 1. prepare
    data = cfg.data or Path("data/prepared") / cfg.dataset
    pcfg = PrepareConfig(
        dataset=cfg.dataset,
        source=cfg.source,
        out=Path(data),
        phantom_patients=budget.phantom_patients,
        phantom_size=budget.phantom_size,
    )
    prep = cache.run(
        "prepare",
        "prepare",
        to_dict(pcfg),
        lambda extra, _resume: _prepare(pcfg, {**tags, **extra}),
        validate=lambda o: (Path(o["data"]) / "manifest.json").is_file(),
    ).outputs
    data_path, fp = Path(prep["data"]), prep["fingerprint"]

    def train(label: str, skip: str, epochs: int, pretrained: str | None, genotype: str | None, seed: int) -> dict:
        tcfg = TrainConfig(
            data=data_path,
            backbone=bb,
            skip=skip,
            genotype=genotype,
            epochs=epochs,
            seed=seed,
            pretrained=pretrained,
            device=cfg.device,
            max_slices_per_epoch=budget.max_slices_per_epoch,
        )
        params = {**to_dict(tcfg), "data_fingerprint": fp}
        return cache.run(
            "retrain", label, params, lambda extra, resume: run_retrain(tcfg, {**tags, **extra}, resume_run=resume)
        ).outputs

    def evaluate(label: str, model_uri: str, split: str) -> dict:
        ecfg = EvalConfig(model=model_uri, data=data_path, split=split, device=cfg.device)
        return cache.run(
            "evaluate", f"evaluate {label} ({split})", {**to_dict(ecfg), "data_fingerprint": fp},
            lambda extra, _resume: run_evaluate(ecfg, {**tags, **extra}),
        ).outputs

    # 2. baseline and skip variants (same extra budget from the baseline's weights)
    base = train("baseline U-Net", "identity", budget.baseline_epochs, None, None, first_seed)
    models = {"identity": base["model_uri"]}
    models["identity-extra"] = train("plain U-Net, extra epochs", "identity", budget.extra_epochs, base["model_uri"], None, first_seed)["model_uri"]
    for skip in cfg.skips:
        models[skip] = train(f"{skip} skips", skip, budget.extra_epochs, base["model_uri"], None, first_seed)["model_uri"]

    # 3. searches per seed, a random cell, and the retrained cells
    searches: dict[str, dict] = {}
    for seed in cfg.seeds:
        scfg = SearchConfig(
            data=data_path,
            backbone=bb,
            epochs=budget.search_epochs,
            warmup_epochs=budget.warmup_epochs,
            pretrained=base["model_uri"],
            seed=seed,
            device=cfg.device,
            max_slices_per_epoch=budget.max_slices_per_epoch,
        )
        for method in ("full", "lth"):
            params = {**to_dict(scfg), "method": method, "data_fingerprint": fp}
            params["stability"] = to_dict(budget.stability) if method == "lth" else budget.stability.check_every
            ref_run = searches.get(f"full-{seed}", {}).get("run_id") if method == "lth" else None
            out = cache.run(
                f"search_{method}",
                f"search_{method} (seed {seed})",
                params,
                lambda extra, resume, m=method, s=scfg, rr=ref_run: run_search_step(
                    s, m, budget.stability, {**tags, **extra}, resume_run=resume, reference_run=rr
                ),
            ).outputs
            searches[f"{method}-{seed}"] = out
        rnd = cache.run(
            "random_cell",
            f"random cell (seed {seed})",
            {**to_dict(scfg), "data_fingerprint": fp},
            lambda extra, _resume, s=scfg: run_random_cell(s, {**tags, **extra}),
        ).outputs
        searches[f"random-{seed}"] = rnd
        for method in ("full", "lth", "random"):
            cell = searches[f"{method}-{seed}"]["cell_uri"]
            models[f"iac-{method}/seed{seed}"] = train(
                f"U-Net + {method} cell (seed {seed})", "iac", budget.extra_epochs, base["model_uri"], cell, seed
            )["model_uri"]

    # 4. evaluate every model on test; cells also on val (writes val_dice back to the cell)
    evals: dict[str, dict] = {}
    for name, uri in models.items():
        evals[name] = evaluate(name, uri, "test")
        if name.startswith("iac-"):
            evaluate(name, uri, "val")

    # 5. stats over this study's test evaluations
    stcfg = StatsConfig(min_pairs=budget.min_pairs)
    eval_ids = sorted(e["run_id"] for e in evals.values())
    st = cache.run(
        "stats",
        "stats",
        {**to_dict(stcfg), "runs": eval_ids},
        lambda extra, _resume: run_stats(stcfg, eval_ids, {**tags, **extra}),
    ).outputs

    seconds = time.perf_counter() - t_start
    outputs = {"data": str(data_path), "fingerprint": fp, "models": models, "searches": searches, "evaluations": evals, "stats": st}
    report = write_report(cfg, budget, outputs, cache.log, seconds, Path(cfg.report_dir), tracker)
    return StudyResult(outputs=outputs, report=report, steps=cache.log, seconds=seconds)
