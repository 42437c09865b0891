"""Figure of the headline benchmark: search time of IAC-LTH against the full search.

Usage (after ``benchmarks/lth_speedup.py --out DIR`` for one or more seeds)::

    python benchmarks/plot_lth_speedup.py outputs/lth-s0 outputs/lth-s1 --out docs/figures/lth_speedup.png

For every benchmark folder it reads the ``search_full`` and ``search_lth``
runs from ``DIR/mlflow.db`` and their ``trajectory.json`` artifacts, and draws
two panels per seed: the cumulative search time over epochs (the control arm
is the full curve where LTH stopped) and the time of each epoch with the
number of surviving operations.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def load_arms(folder: Path) -> dict[str, dict]:
    """The latest full and LTH search trajectories (and run ids) of one benchmark folder."""
    import mlflow

    db = folder / "mlflow.db"
    if not db.is_file():
        raise FileNotFoundError(f"{db} not found: is {folder} an output folder of benchmarks/lth_speedup.py?")
    mlflow.set_tracking_uri(f"sqlite:///{db.resolve()}")
    arms = {}
    for method in ("full", "lth"):
        runs = mlflow.search_runs(
            search_all_experiments=True,
            filter_string=f"tags.step = 'search_{method}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
            output_format="list",
        )
        if not runs:
            raise ValueError(f"{db} holds no finished search_{method} run")
        path = mlflow.artifacts.download_artifacts(run_id=runs[0].info.run_id, artifact_path="trajectory.json")
        arms[method] = {"run": runs[0], "trajectory": json.loads(Path(path).read_text())}
    return arms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="output folders of lth_speedup.py (one per seed)")
    parser.add_argument("--out", type=Path, default=Path("lth_speedup.png"))
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(args.folders), 2, figsize=(11, 3.6 * len(args.folders)), squeeze=False)
    for row, folder in zip(axes, args.folders):
        arms = load_arms(folder)
        seed = arms["full"]["run"].data.tags.get("seed", "?")
        full, lth = arms["full"]["trajectory"]["epochs"], arms["lth"]["trajectory"]["epochs"]
        stop = len(lth)
        f_cum = [e["cum_seconds"] / 60 for e in full]
        l_cum = [e["cum_seconds"] / 60 for e in lth]
        ax = row[0]
        ax.plot(range(1, len(full) + 1), f_cum, label=f"full search ({f_cum[-1]:.0f} min)")
        ax.plot(range(1, stop + 1), l_cum, label=f"IAC-LTH ({l_cum[-1]:.1f} min, {f_cum[-1] / l_cum[-1]:.2f}x less)")
        ax.scatter([stop], [f_cum[stop - 1]], color="k", zorder=3, label=f"control: full stopped at {stop} ({f_cum[stop - 1]:.1f} min)")
        ax.set(xlabel="epoch", ylabel="cumulative search time (min)", title=f"seed {seed}: search time")
        ax.legend(fontsize=8)
        ax = row[1]
        ax.plot(range(1, len(full) + 1), [e["epoch_seconds"] for e in full], label="full search", alpha=0.8)
        ax.plot(range(1, stop + 1), [e["epoch_seconds"] for e in lth], label="IAC-LTH", alpha=0.8)
        ax.set(xlabel="epoch", ylabel="epoch time (s)", title=f"seed {seed}: epoch time and surviving operations")
        ops = ax.twinx()
        ops.step(range(1, stop + 1), [e["surviving_ops"] for e in lth], where="post", color="tab:green", alpha=0.6)
        ops.set_ylabel("IAC-LTH surviving operations", color="tab:green")
        ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
