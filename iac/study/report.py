"""The per-study report of ``main``: a Markdown page with its figures.

Gathers the stats tables and plots, the search-time comparison, the found
genotypes with their cell diagrams and each search's operation-weight trajectories, JS curves and
pruning timeline from the child runs' artifacts, writes them to
``<report_dir>/<dataset>-<study run>/report.md`` and logs that folder as the
``report`` artifact of the ``main`` run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from iac.config import Budget, MainConfig

# File name of a search run's cell diagram under ``plots/`` (iac.commands.search.CELL_DIAGRAM).
CELL_DIAGRAM_NAME = "cell.png"
from iac.tracking import Tracker


def write_report(
    cfg: MainConfig,
    budget: Budget,
    outputs: dict[str, Any],
    steps: list[dict[str, Any]],
    seconds: float,
    report_dir: Path,
    tracker: Tracker,
) -> Path:
    """Write the study report and log it; returns the path of ``report.md``.

    Args:
        cfg: the study's settings.
        budget: the resolved budget.
        outputs: the steps' outputs (``data``, ``fingerprint``, ``models``,
            ``searches``, ``evaluations``, ``stats``); figures are fetched from
            the runs they name.
        steps: the step cache's log (``step``, ``run_id``, ``reused``, ``seconds``).
        seconds: the study's wall time.
        report_dir: the report goes to ``<report_dir>/<dataset>-<study run>/``.
        tracker: the ``main`` run's tracker; the folder is logged as ``report``.
    """
    study = getattr(tracker, "run_id", None) or "local"
    folder = Path(report_dir) / f"{cfg.dataset}-{study[:8]}"
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "figures").mkdir(parents=True)
    searches = outputs.get("searches", {})
    lines = [
        *_header(cfg, budget, outputs, seconds, steps),
        *_dice_section(outputs.get("evaluations", {})),
        *_stats_section(outputs.get("stats", {}), folder),
        *_search_time_section(cfg.seeds, searches, folder),
        *_cells_section(searches, folder),
        *_trajectory_sections(searches, folder),
        *_models_and_steps(outputs.get("models", {}), steps),
    ]
    report = folder / "report.md"
    report.write_text("\n".join(lines) + "\n")
    (folder / "study.json").write_text(json.dumps({"outputs": outputs, "steps": steps, "seconds": seconds}, indent=1, default=str))
    tracker.log_artifact(folder, "report")
    return report


def study_time_line(seconds: float, steps: list[dict[str, Any]]) -> str:
    """The study's wall time; with reused steps, also the time the original runs of its steps took.

    A rerun that reuses every step takes seconds; the study's real cost is the
    sum of the original runs' wall times (``original_seconds`` in the step log).
    """
    reused = [s for s in steps if s.get("reused")]
    if not reused:
        return f"study wall time {seconds:.0f} s"
    original = sum(s.get("original_seconds", s["seconds"]) for s in steps)
    return (f"study wall time {seconds:.0f} s ({len(reused)} of {len(steps)} steps reused); "
            f"original study time {original:.0f} s (the runs that did each step's work)")


def _budget_note(cfg: MainConfig, budget: Budget) -> str:
    """What a study of this budget can and cannot show, said plainly next to its name."""
    if cfg.budget in ("smoke", "quick"):
        cohort = ""
        if cfg.dataset == "phantom":
            cohort = (f" on a reduced {'test bed' if budget.phantom_variant == 'testbed' else 'classic phantom'}"
                      f" ({budget.phantom_patients} patients at {budget.phantom_size}x{budget.phantom_size})")
        return (f" (a smoke-sized study{cohort}: it shows that every step runs and what each one produces; "
                "it cannot show whether a cell helps or whether IAC-LTH finds the full search's cell, since its "
                "networks are far from converged and its few test patients cannot resolve a point of Dice. "
                "`budget=study` runs the test bed's frozen design, and docs/benchmarks.md holds the headline "
                "benchmark)")
    if cfg.budget == "study":
        return " (the headline benchmark's frozen design of the test bed, docs/datasets.md: one seed takes hours on 2 CPU cores)"
    return ""


def _header(cfg: MainConfig, budget: Budget, outputs: dict[str, Any], seconds: float,
            steps: list[dict[str, Any]]) -> list[str]:
    stab = budget.stability
    return [
        f"# IAC-LTH study: {cfg.dataset}, {outputs.get('backbone', cfg.backbone.name)}",
        "",
        f"- budget: **{cfg.budget}**" + _budget_note(cfg, budget),
        f"- baseline {budget.baseline_epochs} epochs, +{budget.extra_epochs} epochs for every variant, "
        f"full search {budget.search_epochs} epochs (warm-up {budget.warmup_epochs})",
        f"- LTH: tau={stab.tau:g}, patience={stab.patience}, window={stab.window}, "
        f"keep schedule {list(stab.keep_schedule)}; both searches check every {budget.check_every} architecture steps",
        f"- prepared data: `{outputs['data']}` (fingerprint `{outputs['fingerprint'][:12]}`)",
        f"- seeds: {list(cfg.seeds)}; {study_time_line(seconds, steps)}",
        "",
    ]


def _dice_section(evals: dict[str, dict]) -> list[str]:
    """Mean test Dice and NSD per method (patient level: frames averaged, then patients), best Dice first."""
    if not evals:
        return []
    lines = [
        "## Test Dice per method",
        "",
        "| method | mean foreground Dice (patient level) | mean foreground NSD (patient level) |",
        "|---|---:|---:|",
    ]
    for name, ev in sorted(evals.items(), key=lambda kv: -kv[1]["dice"]):
        nsd = f"{ev['nsd']:.4f}" if ev.get("nsd") is not None else "–"  # evaluations from before NSD
        lines.append(f"| {name} | {ev['dice']:.4f} | {nsd} |")
    return [*lines, ""]


def _stats_section(st: dict[str, Any], folder: Path) -> list[str]:
    """The paired statistics table and plots of the stats run."""
    if not st.get("run_id"):
        return []
    lines = ["## Paired per-patient comparisons", ""]
    md = _download(st["run_id"], "stats.md", folder)
    if md and md.is_file():
        lines += [md.read_text().strip(), ""]
    got = _download(st["run_id"], "plots", folder / "figures")
    if got and got.is_dir():
        for png in sorted(got.glob("*.png")):
            lines += [f"![{png.stem}](figures/plots/{png.name})", ""]
    return lines


def _search_time_section(seeds: tuple[int, ...], searches: dict[str, dict], folder: Path) -> list[str]:
    """Full versus LTH search time per seed: a table and a bar chart."""
    rows = []
    for seed in seeds:
        full, lth = searches.get(f"full-{seed}"), searches.get(f"lth-{seed}")
        if full and lth:
            rows.append((seed, full, lth, full["search_seconds"] / max(lth["search_seconds"], 1e-9)))
    if not rows:
        return []
    lines = [
        "## Search time",
        "",
        "| seed | full (s) | epochs | LTH (s) | epochs | speed-up | full genotype | LTH genotype |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for seed, full, lth, ratio in rows:
        lines.append(
            f"| {seed} | {full['search_seconds']:.1f} | {full['epochs_run']} | {lth['search_seconds']:.1f} | "
            f"{lth['epochs_run']} | {ratio:.2f}x | `{full['genotype']}` | `{lth['genotype']}` |"
        )
    _search_time_figure(rows, folder / "figures" / "search_time.png")
    return [*lines, "", "![search time](figures/search_time.png)", ""]


def _search_time_figure(rows: list[tuple], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r[1]["search_seconds"] for r in rows], width=0.4, label="full")
    ax.bar([x + 0.2 for x in xs], [r[2]["search_seconds"] for r in rows], width=0.4, label="LTH")
    ax.set_xticks(list(xs), [f"seed {s}" for s, *_ in rows])
    ax.set_ylabel("search seconds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _trajectory_sections(searches: dict[str, dict], folder: Path) -> list[str]:
    """Each search's plots (op weights, JS curves, pruning timeline) and its comparison with the full search."""
    lines: list[str] = []
    for key, out in searches.items():
        if key.startswith("random") or not out.get("run_id"):
            continue
        got = _download(out["run_id"], "plots", folder / "figures" / key)
        if not (got and got.is_dir()):
            continue
        lines += [f"## Search {key}", ""]
        m = _metrics(out["run_id"])
        if "speedup_vs_full" in m:
            agreement = m.get("genotype_agreement", float("nan"))
            lines += [f"speed-up over the full search {m['speedup_vs_full']:.2f}x; genotype agreement {agreement:.2f}", ""]
        for png in sorted(got.glob("*.png")):
            if png.name != CELL_DIAGRAM_NAME:  # shown in the cells section
                lines += [f"![{key} {png.stem}](figures/{key}/plots/{png.name})", ""]
    return lines


def _cells_section(searches: dict[str, dict], folder: Path) -> list[str]:
    """The diagram of every found cell (full, LTH and random, per seed) with its registered version."""
    lines: list[str] = []
    for key, out in searches.items():
        if not out.get("run_id"):
            continue
        got = _download(out["run_id"], f"plots/{CELL_DIAGRAM_NAME}", folder / "figures" / "cells" / key)
        if not (got and got.is_file()):
            continue
        rel = got.resolve().relative_to(folder.resolve()).as_posix()  # MLflow returns an absolute path
        lines += [f"### {key}: `{out.get('cell_uri', '')}`", "", f"`{out.get('genotype', '')}`", "",
                  f"![cell {key}]({rel})", ""]
    return ["## Cells", "", *lines] if lines else []


def _models_and_steps(models: dict[str, str], steps: list[dict[str, Any]]) -> list[str]:
    lines = ["## Models", "", "| method | model |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in models.items()]
    lines += ["", "## Steps", "", "| step | run | reused | seconds |", "|---|---|---|---|"]
    lines += [
        f"| {s['step']} | `{(s.get('run_id') or '')[:8]}` | {'yes' if s['reused'] else 'no'} | {s['seconds']:.1f} |"
        for s in steps
    ]
    return lines


def _download(run_id: str, path: str, dst: Path) -> Path | None:
    import mlflow

    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst)))
    except Exception:  # noqa: BLE001 - a missing figure leaves a gap in the report, not a failed study
        return None


def _metrics(run_id: str) -> dict[str, float]:
    import mlflow

    return dict(mlflow.get_run(run_id).data.metrics)
