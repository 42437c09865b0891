"""``main``: the whole study for one dataset, reusing finished steps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from iac.commands.common import build_config, check_store, optional, setup_logging, step_run, tracker_for
from iac.commands.store import open_store
from iac.config import BackboneConfig, MainConfig, to_dict


DEFAULT_EXPERIMENT_ID = "0"  # MLflow's `Default` experiment


def study_experiment(cfg: MainConfig) -> str | None:
    """The experiment ``main`` switches to: ``iac-<dataset>-<backbone>`` when the user chose none.

    The user's choice is kept: ``mlflow run --experiment-name``,
    ``MLFLOW_EXPERIMENT_NAME`` / ``MLFLOW_EXPERIMENT_ID`` or
    ``mlflow.set_experiment``. Only when the experiment in effect is MLflow's
    ``Default`` does the study get its own; under ``mlflow run`` the run
    already exists, so it stays where ``mlflow run`` put it.

    Returns:
        The experiment name to use, or None to stay in the current one.
    """
    import os

    from mlflow.tracking.fluent import _get_experiment_id

    from iac.models import registry_backbone_name

    if os.environ.get("MLFLOW_RUN_ID"):
        return None
    if str(_get_experiment_id()) != DEFAULT_EXPERIMENT_ID:
        return None
    return f"iac-{cfg.dataset}-{registry_backbone_name(cfg.backbone.name, cfg.backbone.preset)}"


def run_main(cfg: MainConfig) -> dict[str, Any]:
    """Run the study inside the ``main`` MLflow run; returns its outputs.

    The run goes to the user's experiment, or to ``iac-<dataset>-<backbone>``
    when that is ``Default`` (:func:`study_experiment`); every step is a child
    run in the same experiment.
    """
    import mlflow

    # The tracking store (open_store checks it first) and the Ray cluster, before the (slow) imports of the steps.
    open_store()
    if cfg.executor == "ray":
        _check_ray(cfg.ray_address)

    from iac.study.budget import resolve_budget
    from iac.study.cache import OUTPUTS_TAG
    from iac.study.driver import run_study

    budget = resolve_budget(cfg)
    tags = {"dataset": cfg.dataset, "backbone": cfg.backbone.name, "budget": cfg.budget, "seed": ",".join(map(str, cfg.seeds))}
    experiment = study_experiment(cfg)
    with step_run("main", tags, run_name=f"main-{cfg.dataset}-{cfg.budget}", experiment=experiment,
                  system_metrics=True) as run:
        tracker = tracker_for(run)
        tracker.log_params({**to_dict(cfg), "resolved_budget": to_dict(budget)})
        result = run_study(cfg, run.info.experiment_id, run.info.run_id, tracker, echo=click.echo)
        reused = sum(s["reused"] for s in result.steps)
        tracker.log_metrics({"study_seconds": result.seconds, "steps_reused": reused, "steps_run": len(result.steps) - reused})
        tracker.set_tags({OUTPUTS_TAG: json.dumps({"report": str(result.report)})})
    uri = mlflow.get_tracking_uri()
    click.echo("")
    click.echo(f"study finished in {result.seconds:.0f} s ({reused} of {len(result.steps)} steps reused)")
    if cfg.budget != "paper":
        click.echo(f"note: budget '{cfg.budget}' is a smoke-sized study; -P budget=paper runs the paper's budgets")
    click.echo(f"report:   {result.report.resolve()}")
    click.echo(f"runs:     mlflow ui --backend-store-uri {uri}   (experiment id {run.info.experiment_id})")
    click.echo(f"best cell: iac registry best --dataset {result.outputs.get('dataset', cfg.dataset)} --backbone {cfg.backbone.name}")
    return result.outputs


def _prepare_options(text: str) -> tuple:
    from iac.config import ConfigError, parse_prepare_options

    try:
        return parse_prepare_options(optional(text) or "")
    except ConfigError as err:
        raise click.BadParameter(err.reason, param_hint="--prepare-options") from err


def _check_ray(address: str) -> None:
    """Fail in seconds, with one line, when Ray is missing or its cluster does not answer."""
    from iac.backend import BackendError, check_ray_address

    try:
        import ray  # noqa: F401 - only checks that the extra is installed
    except ImportError:
        raise click.ClickException("executor=ray needs Ray: pip install 'iac-lth[ray]'") from None
    try:
        check_ray_address(address)
    except BackendError as e:
        raise click.ClickException(str(e)) from None


@click.command("main")
@click.option("--dataset", default="phantom", show_default=True, help="phantom, acdc, brats, kits, amos or nnunet.")
@click.option("--source", default="", help="Raw dataset folder (not needed for phantom).")
@click.option("--data", default="", help="Prepared folder (default data/prepared/<dataset>); without --source, a prepared folder is used as it is.")
@click.option("--backbone", default="unet", show_default=True)
@click.option("--preset", default="small", show_default=True)
@click.option("--budget", default="quick", show_default=True, help="smoke, quick or paper.")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated search seeds.")
@click.option("--baseline-epochs", default=0, type=int, help="Override the budget (0 = the budget's).")
@click.option("--extra-epochs", default=0, type=int, help="Override the budget (0 = the budget's).")
@click.option("--search-epochs", default=0, type=int, help="Override the budget (0 = the budget's).")
@click.option("--warmup-epochs", default=-1, type=int, help="Override the budget (-1 = the budget's).")
@click.option("--tau", default=0.0, type=float, help="Override the budget's LTH tau (0 = the budget's).")
@click.option("--patience", default=0, type=int, help="Override the budget's LTH patience (0 = the budget's).")
@click.option("--window", default=0, type=int, help="Override the budget's LTH window (0 = the budget's).")
@click.option("--check-every", default=0, type=int, help="Override the budget's architecture steps per check (0 = the budget's).")
@click.option("--skips", default="attention,residual,dense", show_default=True, help="Skip baselines to train.")
@click.option("--device", default="auto", show_default=True)
@click.option("--report-dir", default="outputs", show_default=True)
@click.option("--prepare-options", default="", help="prepare's settings when main prepares, e.g. 'spacing=1.25 slice_size=192'.")
@click.option("--executor", default="local", show_default=True, help="local (steps one after another) or ray (steps as Ray tasks).")
@click.option("--ray-address", default="", help="executor=ray: the cluster, host:port or auto (empty: start a local one).")
@click.option("--step-cpus", default=0, type=int, help="CPUs and torch threads per step (0: torch's default locally, 1 on Ray).")
@click.option("--step-gpus", default=0.0, type=float, show_default=True, help="executor=ray: GPUs per training, search or evaluation task.")
@click.option("--claim-timeout", default=60.0, type=float, show_default=True,
              help="Seconds without a heartbeat after which a running step is dead and may be resumed.")
def main(**o: Any) -> None:
    """Run the whole study: prepare, baselines, searches, retraining, evaluation, stats, report."""
    setup_logging()
    # Checked before the settings are built: building them imports the networks (seconds).
    check_store()
    if o["executor"] == "ray":
        _check_ray(optional(o["ray_address"]) or "")
    try:
        seeds = tuple(int(s) for s in o["seeds"].split(",") if s.strip())
    except ValueError as e:
        raise click.BadParameter(f"{o['seeds']!r} is not a comma-separated list of integers", param_hint="--seeds") from e
    source = optional(o["source"])
    unset = lambda name: o[name] or None  # noqa: E731  (0 = the budget's)
    cfg = build_config(
        MainConfig,
        dataset=o["dataset"],
        source=Path(source) if source else None,
        data=Path(o["data"]) if optional(o["data"]) else None,
        backbone=build_config(BackboneConfig, name=o["backbone"], preset=o["preset"]),
        budget=o["budget"],
        seeds=seeds,
        baseline_epochs=unset("baseline_epochs"),
        extra_epochs=unset("extra_epochs"),
        search_epochs=unset("search_epochs"),
        warmup_epochs=None if o["warmup_epochs"] == -1 else o["warmup_epochs"],
        tau=unset("tau"),
        patience=unset("patience"),
        window=unset("window"),
        check_every=unset("check_every"),
        skips=tuple(s.strip() for s in o["skips"].split(",") if s.strip()),
        device=o["device"],
        report_dir=Path(o["report_dir"]),
        prepare_options=_prepare_options(o["prepare_options"]),
        executor=o["executor"],
        ray_address=optional(o["ray_address"]) or "",
        step_cpus=o["step_cpus"] or None,
        step_gpus=o["step_gpus"],
        claim_timeout=o["claim_timeout"],
    )
    try:
        run_main(cfg)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
