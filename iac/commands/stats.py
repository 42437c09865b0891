"""``stats``: paired per-patient comparisons of evaluate runs.

Selects evaluate runs of one experiment by the tags ``evaluate`` writes
(dataset, backbone, split, eval_data_fingerprint, method, seed) or by explicit
run ids, reads each run's ``per_case.csv`` through :func:`iac.eval.per_case.load_per_case`,
and writes ``stats.csv``, ``stats.md``, ``stats.tex`` and plots.
"""

from __future__ import annotations

import gc
import json
import tempfile
from pathlib import Path
from typing import Any, Sequence

import click

from iac.commands.common import (
    build_config,
    echo_done,
    optional,
    setup_logging,
    step_run,
    tracker_for,
)
from iac.commands.store import open_store
from iac.config import StatsConfig, to_dict


def selection_key(tags: dict[str, str]) -> tuple[str, ...]:
    """What tells evaluate runs apart for ``stats``: (dataset, evaluated data, backbone, method, seed).

    Runs from before ``eval_data_fingerprint`` was tagged fall back to
    ``data_fingerprint``, which was then the evaluated data's.
    """
    evaluated = tags.get("eval_data_fingerprint") or tags.get("data_fingerprint", "")
    return (tags.get("dataset", ""), evaluated, tags.get("backbone", ""), tags.get("method", ""), tags.get("seed", ""))


def find_evaluate_runs(
    experiment: str | None,
    dataset: str | None = None,
    backbone: str | None = None,
    split: str = "test",
    fingerprint: str | None = None,
    study: str | None = None,
) -> list[str]:
    """Run ids of the latest finished evaluate run per :func:`selection_key` matching the filters.

    ``fingerprint`` filters on the evaluated data (``eval_data_fingerprint``).
    Runs of several datasets, or of several versions of one prepared dataset,
    are all kept: ``stats`` compares each dataset on its own, and refuses one
    dataset evaluated on different data rather than mixing them.
    """
    import mlflow

    exp = mlflow.get_experiment_by_name(experiment) if experiment else None
    if experiment and exp is None:
        raise ValueError(f"no experiment named {experiment!r}")
    ids = [exp.experiment_id] if exp else [e.experiment_id for e in mlflow.search_experiments()]
    filters = ["tags.step = 'evaluate'", "attributes.status = 'FINISHED'", f"tags.split = '{split}'"]
    wanted = (("dataset", dataset), ("backbone", backbone), ("eval_data_fingerprint", fingerprint), ("iac_study", study))
    filters += [f"tags.{key} = '{value}'" for key, value in wanted if value]
    runs = mlflow.search_runs(
        experiment_ids=ids, filter_string=" and ".join(filters), output_format="list",
        order_by=["attributes.start_time DESC"],
    )
    latest: dict[tuple[str, ...], str] = {}
    for r in runs:
        latest.setdefault(selection_key(r.data.tags), r.info.run_id)
    return sorted(latest.values())


def _load_run(run_id: str, dst: Path):
    import mlflow

    from iac.eval.per_case import load_per_case
    from iac.stats.inputs import EvaluatedRun

    run = mlflow.get_run(run_id)
    folder = dst / run_id
    csv = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="per_case.csv", dst_path=str(folder)))
    try:
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="per_case.json", dst_path=str(folder))
    except Exception as e:  # noqa: BLE001 - load_per_case names what is missing
        raise ValueError(f"evaluate run {run_id} has no per_case.json (empty-structure policy unknown)") from e
    df, meta = load_per_case(csv)
    t = run.data.tags
    return EvaluatedRun(
        per_case=df,
        meta=meta,
        method=t.get("method") or meta.get("method"),
        seed=t.get("seed") or meta.get("seed"),
        dataset=t.get("dataset") or meta.get("dataset"),
        backbone=t.get("backbone") or meta.get("backbone"),
        run_id=run_id,
    ), t


def _search_times(tags: Sequence[dict[str, str]]) -> dict[str, list[float]]:
    """Search seconds of the cells behind iac-* evaluate runs, by method."""
    from iac import registry

    times: dict[str, list[float]] = {}
    seen: set[str] = set()
    for t in tags:
        uri = t.get("genotype", "")
        method = t.get("method", "")
        if not uri.startswith("models:/") or uri in seen or method not in ("iac-full", "iac-lth"):
            continue
        seen.add(uri)
        try:
            secs = float(registry.resolve(uri).tags.get("search_seconds", "nan"))
        except ValueError:
            continue
        times.setdefault(method.removeprefix("iac-"), []).append(secs)
    return times


def run_stats(cfg: StatsConfig, run_ids: Sequence[str], extra_tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Compare the given evaluate runs inside a ``stats`` MLflow run; returns outputs."""
    open_store()
    import matplotlib

    matplotlib.use("Agg")
    import mlflow

    from iac.stats.comparisons import compare_methods, headline_metrics
    from iac.stats.inputs import patient_scores, pool_seeds, stack_runs
    from iac.stats.plots import patient_score_figure, search_time_figure
    from iac.stats.tables import write_tables

    if not run_ids:
        raise ValueError("no evaluate runs selected: check the experiment and the tag filters")
    gc.freeze()  # statsmodels' multipletests runs a full gc.collect() per call; keep it cheap
    with tempfile.TemporaryDirectory() as tmp:
        loaded = [_load_run(r, Path(tmp)) for r in run_ids]
        runs, tags = [x[0] for x in loaded], [x[1] for x in loaded]
        stacked = stack_runs(runs)
        results = compare_methods(stacked, cfg)
        datasets = sorted(set(stacked["dataset"]))
        backbones = sorted(set(stacked["backbone"]))
        run_tags = {
            "dataset": ",".join(datasets),
            "backbone": ",".join(backbones),
            "reference": cfg.reference,
            "eval_data_fingerprint": ",".join(sorted(set(stacked["eval_data_fingerprint"]))),
            "data_fingerprint": ",".join(sorted(set(stacked["data_fingerprint"]) - {""})),
            **(extra_tags or {}),
        }
        with step_run("stats", run_tags, run_name="stats") as run:
            tracker = tracker_for(run)
            tracker.log_params({**to_dict(cfg), "n_runs": len(run_ids)})
            tracker.log_text("\n".join(run_ids), "evaluate_runs.txt")
            out = Path(tmp) / "out"
            paths = write_tables(results, out)
            for p in paths.values():
                tracker.log_artifact(p)
            scores = pool_seeds(patient_scores(stacked, cfg.metrics, cfg.average_frames), cfg.metrics)
            (out / "plots").mkdir(exist_ok=True)
            for metric in cfg.metrics:
                fig = patient_score_figure(scores, metric=metric, label="mean_fg")
                fig.savefig(out / "plots" / f"per_patient_{metric}.png", dpi=110, bbox_inches="tight")
            times = _search_times(tags)
            if times.get("full") and times.get("lth"):
                fig = search_time_figure(times, baseline="full")
                fig.savefig(out / "plots" / "search_time.png", dpi=110, bbox_inches="tight")
            tracker.log_artifact(out / "plots")
            headline = headline_metrics(results)
            tracker.log_metrics({k.replace("/", "."): v for k, v in headline.items()})
            outputs = {"run_id": run.info.run_id, "n_rows": int(len(results)), "methods": sorted(set(stacked["method"]))}
            mlflow.set_tag("iac_outputs", json.dumps(outputs))
            table = paths["md"].read_text()
    click.echo(table)
    echo_done("stats", run, f"{len(results)} comparisons against {cfg.reference}")
    return outputs


class OptionalFloat(click.ParamType):
    """A number, or empty (``""``, ``none``) for "not set" (MLflow passes unset parameters as "")."""

    name = "number"

    def convert(self, value: Any, param, ctx) -> float | None:
        if value is None or isinstance(value, float):
            return value
        text = optional(str(value))
        if text is None:
            return None
        try:
            return float(text)
        except ValueError:
            self.fail(f"{value!r} is not a number (leave it empty for none)", param, ctx)


def _margin_option(flag: str, field: str, help_text: str):
    default = getattr(StatsConfig, field)
    return click.option(flag, field, default="" if default is None else default, type=OptionalFloat(),
                        show_default=True, help=help_text)


@click.command("stats")
@click.option("--experiment", default="", help="Experiment holding the evaluate runs (default: all experiments).")
@click.option("--dataset", default="", help="Only evaluate runs of this dataset.")
@click.option("--backbone", default="", help="Only evaluate runs of this backbone.")
@click.option("--split", default="test", show_default=True, help="Split the evaluate runs scored.")
@click.option("--fingerprint", default="", help="Only evaluate runs of this prepared data (eval_data_fingerprint).")
@click.option("--runs", "run_ids", default="", help="Comma-separated evaluate run ids (instead of the filters).")
@click.option("--reference", default=StatsConfig.reference, show_default=True, help="Method compared with every other.")
@click.option("--metrics", default=",".join(StatsConfig.metrics), show_default=True,
              help="Comma-separated scores to compare: dice, hd95, nsd.")
@click.option("--margin", default=StatsConfig.margin, show_default=True, type=float, help="Equivalence (TOST) margin on the Dice scale.")
@_margin_option("--hd95-margin", "hd95_margin", "Equivalence margin for HD95 in mm (empty: no TOST on HD95).")
@_margin_option("--nsd-margin", "nsd_margin", "Equivalence margin on the NSD scale (empty: no TOST on NSD).")
@_margin_option("--ni-margin", "ni_margin", "Non-inferiority margin on the Dice scale (empty: no such test).")
@_margin_option("--hd95-ni-margin", "hd95_ni_margin", "Non-inferiority margin for HD95 in mm (empty: none).")
@_margin_option("--nsd-ni-margin", "nsd_ni_margin", "Non-inferiority margin on the NSD scale (empty: none).")
@click.option("--min-pairs", default=StatsConfig.min_pairs, show_default=True, type=int, help="Fewest patients a comparison may rest on.")
@click.option("--alpha", default=StatsConfig.alpha, show_default=True, type=float)
@click.option("--zero-method", default=StatsConfig.zero_method, show_default=True, help="scipy wilcoxon zero_method: zsplit, wilcox or pratt.")
@click.option("--frames", type=click.Choice(["average", "separate"]), default="average", show_default=True, help="ACDC frames: averaged per patient, or separate analyses.")
@click.option("--n-boot", default=StatsConfig.n_boot, show_default=True, type=int)
def stats(**o: Any) -> None:
    """Paired Wilcoxon tests, Holm correction, Hodges-Lehmann intervals, equivalence and non-inferiority per patient."""
    setup_logging()
    margins = ("hd95_margin", "nsd_margin", "ni_margin", "hd95_ni_margin", "nsd_ni_margin")
    cfg = build_config(
        StatsConfig,
        reference=o["reference"],
        metrics=tuple(m.strip() for m in o["metrics"].split(",") if m.strip()),
        margin=o["margin"],
        **{name: o[name] for name in margins},
        min_pairs=o["min_pairs"],
        alpha=o["alpha"],
        zero_method=o["zero_method"],
        average_frames=o["frames"] == "average",
        n_boot=o["n_boot"],
    )
    open_store()
    try:
        ids = [r.strip() for r in o["run_ids"].split(",") if r.strip()] or find_evaluate_runs(
            o["experiment"] or None, o["dataset"] or None, o["backbone"] or None, o["split"], o["fingerprint"] or None
        )
        run_stats(cfg, ids)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
