"""``analyze``: when are a search's final operations known, and what would IAC-LTH do?

Reads a search trajectory (``trajectory.json`` from a file, or from the
artifacts of an MLflow run given by its id or a ``runs:/`` URI), prints the
per-epoch top-k membership of the final operations, the first epoch from
which every final operation stays in the top-3, and the offline replay of the
stability policy over a grid of ``tau`` / ``patience`` / ``window``. Tables
(CSV), plots (PNG) and a summary (JSON) go to ``--out``.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import click

from iac.config import StabilityConfig

# Artifact the search commands log the trajectory as.
TRAJECTORY_ARTIFACT = "trajectory.json"
# An MLflow run id: 32 hexadecimal characters.
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
# Default calibration grid (around the StabilityConfig defaults).
DEFAULT_TAUS = "3e-5,5e-5,1e-4,1.5e-4,2e-4"  # around the default (1e-4) and the full-speed divergence (1.6e-4)
DEFAULT_PATIENCES = "1,2,3"
DEFAULT_WINDOWS = "1,2,4"
# The paper's observation: the final operations are among the top-3 early.
DEFAULT_STAY_K = 3


def _numbers(name: str, text: str, kind: Callable[[str], Any]) -> list[Any]:
    try:
        values = [kind(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers", param_hint=f"--{name}") from None
    if not values or any(v <= 0 for v in values):
        raise click.BadParameter(f"needs one or more positive values, got {text!r}", param_hint=f"--{name}")
    return values


def fetch_trajectory(source: str, dst: Path) -> Path:
    """A local trajectory file: ``source`` itself, or downloaded from a run.

    Args:
        source: A path to a trajectory JSON, an MLflow run id, or a
            ``runs:/<id>/...`` artifact URI.
        dst: Folder to download into.
    """
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if not (RUN_ID.match(source) or source.startswith("runs:/")):
        raise click.BadParameter(
            f"{source!r} is neither a trajectory file nor an MLflow run id (32 hex digits) or runs:/ URI",
            param_hint="SOURCE",
        )
    import mlflow

    uri = source if source.startswith("runs:/") else f"runs:/{source}/{TRAJECTORY_ARTIFACT}"
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except Exception as err:  # MLflow raises several types for a missing run or artifact
        raise click.ClickException(f"could not download {uri}: {err}") from err
    return local / TRAJECTORY_ARTIFACT if local.is_dir() else local


def _ranks_table(membership) -> str:
    """Per epoch: how many final ops are in the top-1/2/3, and each edge's rank."""
    import pandas as pd

    label = membership["edge"] if membership["arch"].nunique() == 1 else "a" + membership["arch"].astype(str) + " " + membership["edge"]
    ranks = membership.assign(col=label).pivot(index="epoch", columns="col", values="rank")
    ranks = ranks.apply(lambda c: c.map(lambda r: "-" if pd.isna(r) else str(int(r))))
    tops = [c for c in membership.columns if c.startswith("top")]
    counts = membership.groupby("epoch")[tops].sum().astype(int)
    n = membership.groupby("epoch").size()
    counts = counts.apply(lambda c: c.astype(str) + "/" + n.astype(str))
    return pd.concat([counts, ranks], axis=1).to_string()


@click.command("analyze")
@click.argument("source")
@click.option("--out", default="analysis", show_default=True, help="Folder for the CSV, PNG and JSON outputs.")
@click.option("--tau", "taus", default=DEFAULT_TAUS, show_default=True, help="Comma-separated tau values to replay.")
@click.option("--patience", "patiences", default=DEFAULT_PATIENCES, show_default=True, help="Comma-separated patience values.")
@click.option("--window", "windows", default=DEFAULT_WINDOWS, show_default=True, help="Comma-separated window values.")
@click.option("--smoothing", default=StabilityConfig.smoothing, show_default=True, type=float, help="EMA factor used in every replay.")
@click.option("--keep-schedule", default=",".join(map(str, StabilityConfig.keep_schedule)), show_default=True, help="Top-k kept at successive stabilities.")
@click.option("--stay-k", default=DEFAULT_STAY_K, show_default=True, type=int, help="Report the first epoch from which every final op stays in this top-k.")
@click.option("--other-full", multiple=True, help="Another full search of the same data (file, run id or runs:/ URI; repeatable): full-vs-full agreement.")
def analyze(source: str, out: str, taus: str, patiences: str, windows: str, smoothing: float, keep_schedule: str, stay_k: int,
            other_full: tuple[str, ...]) -> None:
    """Analyse a search trajectory (file or MLflow run id) and replay IAC-LTH on it."""
    import matplotlib

    matplotlib.use("Agg")
    from iac.nas import analysis, plots
    from iac.nas.replay import replay, replay_grid
    from iac.nas.trajectory import final_genotype, load_trajectory, trajectory_space

    tau_list, patience_list, window_list, base = _replay_settings(taus, patiences, windows, smoothing, keep_schedule)
    if stay_k < 1:
        raise click.BadParameter(f"must be >= 1, got {stay_k}", param_hint="--stay-k")
    # The grid's middle setting: its replay's events feed the timeline when none are recorded.
    middle = replace(base, tau=_middle(tau_list), patience=_middle(patience_list), window=_middle(window_list))
    out_dir = Path(out)

    with tempfile.TemporaryDirectory() as tmp:
        try:
            traj = load_trajectory(fetch_trajectory(source, Path(tmp)))
            ks = sorted({1, 2, 3, stay_k})
            membership = analysis.topk_membership(traj, ks=ks)
            grid = replay_grid(traj, tau_list, patience_list, window_list, base=base)
            events = traj.get("events") or [ev.to_dict() for ev in replay(traj, cfg=middle).events]
            others = [final_genotype(load_trajectory(fetch_trajectory(s, Path(tmp) / str(i))))
                      for i, s in enumerate(other_full)]
        except ValueError as err:
            raise click.ClickException(str(err)) from err
    space = trajectory_space(traj)
    spearman = analysis.rank_correlation(traj)
    js = analysis.consecutive_js(traj)
    n_archs = len(traj["checks"][0]["archs"]) if traj["checks"] else 1
    timeline = analysis.op_timeline(events, space, n_archs)
    first = analysis.first_epoch_in_topk(membership, stay_k)
    n_epochs = len(traj["epochs"])
    last_epoch = int(traj["epochs"][-1]["epoch"]) if traj["epochs"] else int(membership["epoch"].max())
    tables = {
        "topk_membership": membership,
        "rank_correlation": spearman,
        "consecutive_js": js,
        "replay_grid": grid,
        "op_timeline": timeline,
    }
    figures = {
        "consecutive_js": plots.consecutive_js_figure(js, tau=middle.tau),
        "op_timeline": plots.op_timeline_figure(timeline, last_epoch),
        "topk_membership": plots.topk_membership_figure(membership, stay_k),
    }
    summary = {
        "source": source,
        "epochs": n_epochs,
        "checks": len(traj["checks"]),
        "final_genotype": str(final_genotype(traj)),
        f"first_epoch_all_final_ops_in_top{stay_k}": first,
        "mean_spearman_last_epoch": None if spearman.empty else _mean_last(spearman),
        "timeline_events": "recorded" if traj.get("events") else f"replayed with tau={middle.tau:g}, patience={middle.patience}, window={middle.window}",
        "replay_grid": json.loads(grid.to_json(orient="records")),
        "agreement_yardsticks": _yardsticks(final_genotype(traj), others),
    }
    _write_outputs(out_dir, tables, figures, summary)
    _echo_report(summary, membership, grid, first, stay_k, out_dir)


def _replay_settings(
    taus: str, patiences: str, windows: str, smoothing: float, keep_schedule: str
) -> tuple[list[float], list[int], list[int], StabilityConfig]:
    """The replay grid's values and the settings outside the grid, validated."""
    tau_list = _numbers("tau", taus, float)
    patience_list = _numbers("patience", patiences, int)
    window_list = _numbers("window", windows, int)
    schedule = tuple(_numbers("keep-schedule", keep_schedule, int))
    if not 0 <= smoothing < 1:
        raise click.BadParameter(f"must be in [0, 1), got {smoothing}", param_hint="--smoothing")
    return tau_list, patience_list, window_list, StabilityConfig(smoothing=smoothing, keep_schedule=schedule)


def _write_outputs(out_dir: Path, tables: dict[str, Any], figures: dict[str, Any], summary: dict[str, Any]) -> None:
    """``<name>.csv`` per table, ``<name>.png`` per figure and ``summary.json`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_csv(out_dir / f"{name}.csv", index=False)
    for name, fig in figures.items():
        fig.savefig(out_dir / f"{name}.png", dpi=120)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))


def _echo_report(summary: dict[str, Any], membership, grid, first: int | None, stay_k: int, out_dir: Path) -> None:
    """Prints the top-k table, the first epoch in the top-``stay_k`` and the replay grid."""
    n_epochs = summary["epochs"]
    click.echo(f"trajectory: {summary['source']}  ({n_epochs} epochs, {summary['checks']} checks)")
    click.echo(f"final genotype: {summary['final_genotype']}")
    click.echo("\nfinal operations in the current top-k (counts) and each final op's rank, per epoch:")
    click.echo(_ranks_table(membership))
    where = "never (not all in the top-k at the end)" if first is None else f"epoch {first} (0-based) of {n_epochs}"
    click.echo(f"\nfirst epoch from which every final operation stays in the top-{stay_k}: {where}")
    click.echo("\noffline replay of IAC-LTH (counterfactual once pruning starts):")
    cols = ["tau", "patience", "window", "stop_epoch", "epochs_run", "epoch_ratio", "events", "shared_choices", "jaccard"]
    if grid["diverged_check"].notna().any():
        cols.append("diverged_check")
        click.echo("(diverged_check: the recorded search pruned operations this setting would still keep)")
    click.echo(grid[cols].to_string(index=False))
    y = summary["agreement_yardsticks"]
    click.echo(f"agreement with the final genotype by chance (random genotypes of this space): Jaccard "
               f"{y['random_jaccard_mean']:.2f} on average, {y['random_jaccard_p95']:.2f} at the 95th and "
               f"{y['random_jaccard_p99']:.2f} at the 99th percentile")
    if "full_vs_full_jaccard_mean" in y:
        click.echo(f"full search vs full search ({int(y['full_vs_full_pairs'])} pairs): Jaccard "
                   f"{y['full_vs_full_jaccard_mean']:.2f}")
    click.echo(f"\noutputs written to {out_dir}")


def _yardsticks(final, others: list) -> dict[str, float]:
    """Chance agreement for this space and, with other full searches, full-vs-full agreement."""
    from iac.nas.agreement import agreement_metrics

    m = agreement_metrics(final, final, others)
    return {k: v for k, v in m.items() if k.startswith(("random_", "full_vs_full"))}


def _middle(values: list[Any]) -> Any:
    return sorted(values)[len(values) // 2]


def _mean_last(spearman) -> float | None:
    last = spearman[spearman["epoch"] == spearman["epoch"].max()]["spearman"].dropna()
    return None if last.empty else float(last.mean())
