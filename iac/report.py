"""The per-study report of ``main``: a Markdown page with its figures.

Gathers the stats tables and plots, the search-time comparison, the found
genotypes and each search's operation-weight trajectories, JS curves and
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


def _download(run_id: str, path: str, dst: Path) -> Path | None:
    import mlflow

    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst)))
    except Exception:  # noqa: BLE001 - a missing figure leaves a gap in the report, not a failed study
        return None


def _metrics(run_id: str) -> dict[str, float]:
    import mlflow

    return dict(mlflow.get_run(run_id).data.metrics)


def write_report(
    cfg: MainConfig,
    budget: Budget,
    outputs: dict[str, Any],
    steps: list[dict[str, Any]],
    seconds: float,
    report_dir: Path,
    tracker,
) -> Path:
    """Write the study report and log it; returns the path of ``report.md``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    study = getattr(tracker, "run_id", None) or "local"
    folder = Path(report_dir) / f"{cfg.dataset}-{study[:8]}"
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "figures").mkdir(parents=True)
    lines = [
        f"# IAC-LTH study: {cfg.dataset}, {outputs.get('backbone', cfg.backbone.name)}",
        "",
        f"- budget: **{cfg.budget}**"
        + (" (a smoke-sized study: numbers show the pipeline works, not the method's effect)" if cfg.budget != "paper" else ""),
        f"- baseline {budget.baseline_epochs} epochs, +{budget.extra_epochs} epochs for every variant, "
        f"full search {budget.search_epochs} epochs (warm-up {budget.warmup_epochs})",
        f"- LTH: tau={budget.stability.tau:g}, patience={budget.stability.patience}, window={budget.stability.window}, "
        f"check every {budget.stability.check_every} architecture steps, keep schedule {list(budget.stability.keep_schedule)}",
        f"- prepared data: `{outputs['data']}` (fingerprint `{outputs['fingerprint'][:12]}`)",
        f"- seeds: {list(cfg.seeds)}; study wall time {seconds:.0f} s",
        "",
    ]

    # Mean test Dice per method (patient level: frames averaged, then patients).
    evals = outputs.get("evaluations", {})
    if evals:
        lines += ["## Test Dice per method", "", "| method | mean foreground Dice (patient level) |", "|---|---:|"]
        lines += [f"| {name} | {ev['dice']:.4f} |" for name, ev in sorted(evals.items(), key=lambda kv: -kv[1]["dice"])]
        lines.append("")

    # Paired statistics.
    st = outputs.get("stats", {})
    if st.get("run_id"):
        md = _download(st["run_id"], "stats.md", folder)
        lines += ["## Paired per-patient comparisons", ""]
        if md and md.is_file():
            lines += [md.read_text().strip(), ""]
        for fig in ("plots",):
            got = _download(st["run_id"], fig, folder / "figures")
            if got and got.is_dir():
                for png in sorted(got.glob("*.png")):
                    lines += [f"![{png.stem}](figures/plots/{png.name})", ""]

    # Search time: full versus LTH per seed.
    searches = outputs.get("searches", {})
    rows = []
    for seed in cfg.seeds:
        full, lth = searches.get(f"full-{seed}"), searches.get(f"lth-{seed}")
        if not (full and lth):
            continue
        ratio = full["search_seconds"] / max(lth["search_seconds"], 1e-9)
        rows.append((seed, full, lth, ratio))
    if rows:
        lines += ["## Search time", "", "| seed | full (s) | epochs | LTH (s) | epochs | speed-up | full genotype | LTH genotype |", "|---|---|---|---|---|---|---|---|"]
        for seed, full, lth, ratio in rows:
            lines.append(
                f"| {seed} | {full['search_seconds']:.1f} | {full['epochs_run']} | {lth['search_seconds']:.1f} | "
                f"{lth['epochs_run']} | {ratio:.2f}x | `{full['genotype']}` | `{lth['genotype']}` |"
            )
        fig, ax = plt.subplots(figsize=(5, 3))
        labels = [f"seed {s}" for s, *_ in rows]
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], [r[1]["search_seconds"] for r in rows], width=0.4, label="full")
        ax.bar([x + 0.2 for x in xs], [r[2]["search_seconds"] for r in rows], width=0.4, label="LTH")
        ax.set_xticks(list(xs), labels)
        ax.set_ylabel("search seconds")
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "figures" / "search_time.png", dpi=110)
        plt.close(fig)
        lines += ["", "![search time](figures/search_time.png)", ""]

    # Trajectories of each search.
    for key, out in searches.items():
        if key.startswith("random") or not out.get("run_id"):
            continue
        got = _download(out["run_id"], "plots", folder / "figures" / key)
        if not (got and got.is_dir()):
            continue
        lines += [f"## Search {key}", ""]
        m = _metrics(out["run_id"])
        if "speedup_vs_full" in m:
            lines += [f"speed-up over the full search {m['speedup_vs_full']:.2f}x; genotype agreement {m.get('genotype_agreement', float('nan')):.2f}", ""]
        for png in sorted(got.glob("*.png")):
            lines += [f"![{key} {png.stem}](figures/{key}/plots/{png.name})", ""]

    # Models and steps.
    lines += ["## Models", "", "| method | model |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in outputs.get("models", {}).items()]
    lines += ["", "## Steps", "", "| step | run | reused | seconds |", "|---|---|---|---|"]
    lines += [f"| {s['step']} | `{(s.get('run_id') or '')[:8]}` | {'yes' if s['reused'] else 'no'} | {s['seconds']:.1f} |" for s in steps]
    report = folder / "report.md"
    report.write_text("\n".join(lines) + "\n")
    (folder / "study.json").write_text(json.dumps({"outputs": outputs, "steps": steps, "seconds": seconds}, indent=1, default=str))
    tracker.log_artifact(folder, "report")
    return report
