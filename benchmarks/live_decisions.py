"""Live decisions of IAC-LTH: cadence invariance, agreement and score fidelity on real searches.

Usage (from the project root)::

    python benchmarks/live_decisions.py [--out outputs/live-decisions] [--results benchmarks/results/live_decisions]
    python benchmarks/live_decisions.py --summary   # tables from the arms already run

On the ``quick`` phantom cohort (34 patients at 32x32; search space at its
defaults) it trains one baseline U-Net, then runs, one after another on one
torch thread, the arms of :data:`ARMS`: full searches (20 epochs, the
``quick`` budget) for two search seeds, and IAC-LTH with the sequential and
the JS criterion at the ``quick`` cadence (``check_every`` 10) for both seeds
and at half and double that cadence for seed 0. Each finished arm is
appended to ``<results>/arms.jsonl`` (its trajectory kept beside it), and an
arm already there is skipped when the script runs again, so an interrupted
run resumes with the next arm.

``--summary`` prints and writes ``<results>/tables.md``:

1. cadence invariance: per criterion, the decision (architecture step of the
   last pruning event), the epochs run and the agreement with the same
   seed's full search at each cadence, their shift from the ``quick``
   cadence, and the seed-to-seed spread at that cadence;
2. agreement with its yardsticks: every IAC-LTH cell against the full searches,
   next to full-vs-full across the two seeds and random pairs;
3. score fidelity: on each full-search trajectory, each criterion replayed
   (:func:`iac.nas.replay.decision_fidelity`) and how often what it keeps
   is what the full search's complete record keeps at that check.

The full-search trajectories carry per-check alpha-gradient means and
variances: ``python benchmarks/stability_sim.py --trajectory
<results>/trajectory-full-s0.json`` replays that noise in the simulator.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUICK_CHECK_EVERY = 10
# (name, method, criterion, check_every, seed), in the order they run: both full searches and the JS arms
# (which stop early) first, then the PC-DARTS loop, then the sequential arms (which run every epoch).
ARMS = (
    ("full-s0", "full", None, QUICK_CHECK_EVERY, 0),
    ("seq-ce10-s0", "lth", "sequential", 10, 0),
    ("full-s1", "full", None, QUICK_CHECK_EVERY, 1),
    ("js-ce10-s0", "lth", "js", 10, 0),
    ("js-ce10-s1", "lth", "js", 10, 1),
    ("full-pcdarts-s0", "full", None, QUICK_CHECK_EVERY, 0),
    ("js-ce5-s0", "lth", "js", 5, 0),
    ("js-ce20-s0", "lth", "js", 20, 0),
    ("seq-ce10-s1", "lth", "sequential", 10, 1),
    ("seq-ce5-s0", "lth", "sequential", 5, 0),
    ("seq-ce20-s0", "lth", "sequential", 20, 0),
)
# Search-loop settings of an arm other than the project's defaults: PC-DARTS's (architecture step first,
# SGD with momentum at lr 0.1, weight decay 3e-4, cell-weight gradients clipped at norm 5).
OVERRIDES = {
    "full-pcdarts-s0": {"step_order": "arch_first", "w_optimizer": "sgd", "w_lr": 0.1, "w_momentum": 0.9,
                        "w_weight_decay": 3e-4, "w_grad_clip": 5.0},
}


def parse_args() -> argparse.Namespace:
    """The command line (every default is the run recorded in docs/benchmarks.md)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/live-decisions"), help="MLflow store and data")
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/live_decisions"))
    parser.add_argument("--summary", action="store_true", help="only print the tables of the arms already run")
    parser.add_argument("--arms", default=None, help="comma-separated arm names to run (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return parser.parse_args()


def quick_stability(criterion: str):
    """The ``quick`` budget's stability settings with ``criterion``."""
    from dataclasses import replace

    from iac.config import BUDGETS

    return replace(BUDGETS["quick"].stability, criterion=criterion)


def load_arms(results: Path) -> dict[str, dict]:
    """The finished arms, by name."""
    path = results / "arms.jsonl"
    if not path.exists():
        return {}
    return {rec["name"]: rec for rec in map(json.loads, path.read_text().splitlines())}


def run_arms(args: argparse.Namespace) -> None:
    """Runs every arm not yet in ``arms.jsonl``, appending each as it finishes."""
    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{(args.out / 'mlflow.db').resolve()}"
    import mlflow

    from iac.commands.retrain import run_retrain
    from iac.commands.search import run_search_step
    from iac.config import BUDGETS, PrepareConfig, SearchConfig, TrainConfig
    from iac.data.prepare import prepare_dataset

    quick = BUDGETS["quick"]
    mlflow.set_experiment("live-decisions")
    data = args.out / "phantom"
    if not (data / "manifest.json").exists():
        prepare_dataset(PrepareConfig(out=data, phantom_patients=quick.phantom_patients,
                                      phantom_size=quick.phantom_size), progress=False)
    state_path = args.results / "baseline.json"
    if state_path.exists() and (args.out / "mlflow.db").exists():
        baseline = json.loads(state_path.read_text())
    else:
        started = time.perf_counter()
        out = run_retrain(TrainConfig(data=data, epochs=quick.baseline_epochs, seed=0, device="cpu"))
        baseline = {"model_uri": out["model_uri"], "seconds": time.perf_counter() - started}
        state_path.write_text(json.dumps(baseline))
    done = load_arms(args.results)
    wanted = set(args.arms.split(",")) if args.arms else {a[0] for a in ARMS}
    for name, method, criterion, check_every, seed in ARMS:
        if name in done or name not in wanted:
            continue
        print(f"arm {name}: {method}, criterion {criterion}, check_every {check_every}, seed {seed}", flush=True)
        cfg = SearchConfig(data=data, epochs=quick.search_epochs, warmup_epochs=quick.warmup_epochs,
                           check_every=check_every, pretrained=baseline["model_uri"], seed=seed, device="cpu",
                           **OVERRIDES.get(name, {}))
        out = run_search_step(cfg, method, quick_stability(criterion or "js"))
        traj = Path(mlflow.artifacts.download_artifacts(run_id=out["run_id"], artifact_path="trajectory.json"))
        kept = args.results / f"trajectory-{name}.json"
        shutil.copyfile(traj, kept)
        rec = {"name": name, "method": method, "criterion": criterion, "check_every": check_every, "seed": seed,
               "overrides": OVERRIDES.get(name, {}), "run_id": out["run_id"], "epochs_run": out["epochs_run"], "search_seconds": out["search_seconds"],
               "genotype": out["genotype"], "trajectory": kept.name}
        with (args.results / "arms.jsonl").open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"arm {name}: {out['epochs_run']} epochs, {out['search_seconds']:.0f} s, {out['genotype']}", flush=True)


def decision_step(trajectory: dict) -> tuple[int, bool]:
    """When IAC-LTH had decided every edge: (architecture step of its last pruning event, True).

    A search that never decided every edge counts as deciding at the end of its
    budget, as in the simulator: (architecture steps run, False).
    """
    events = trajectory.get("events") or []
    if events and any(r.get("all_decided") for r in trajectory["epochs"]):
        return int(events[-1]["arch_step"]), True
    return int(trajectory["epochs"][-1]["arch_steps"]), False


def summary(args: argparse.Namespace) -> str:
    """The three tables of the module docstring, as Markdown."""
    from iac.nas.agreement import agreement, random_agreement
    from iac.nas.replay import decision_fidelity
    from iac.nas.trajectory import final_genotype, load_trajectory

    arms = load_arms(args.results)
    trajs = {n: load_trajectory(args.results / a["trajectory"]) for n, a in arms.items()}
    genos = {n: final_genotype(t) for n, t in trajs.items()}
    fulls = {a["seed"]: n for n, a in arms.items() if a["method"] == "full" and not a.get("overrides")}
    lines = ["## Cadence invariance (live, quick phantom)", "",
             ("Decision = the architecture step of the last pruning event once every edge is decided; "
             "'never (N)' = some edge was still undecided after the N architecture steps run (counted as N)."), "",
             "| criterion | check_every | seed | decision step | epochs run | search s | shared with full (same seed) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    rows = {}
    for n, a in arms.items():
        if a["method"] != "lth":
            continue
        step, decided = decision_step(trajs[n])
        shared = None
        if a["seed"] in fulls:
            ag = agreement(genos[fulls[a["seed"]]], genos[n])
            shared = (ag.shared, ag.total)
        rows[n] = {**a, "step": step, "shared": shared}
        lines.append(f"| {a['criterion']} | {a['check_every']} | {a['seed']} | {step if decided else f'never ({step})'} | "
                     f"{a['epochs_run']} | {a['search_seconds']:.0f} | "
                     f"{'-' if shared is None else f'{shared[0]}/{shared[1]}'} |")
    lines += ["", ("| criterion | quantity | shift at check_every 5 | shift at check_every 20 | seed spread (0 vs 1) | "
              "within the spread |"), "|---|---|---:|---:|---:|---|"]
    for crit, prefix in (("sequential", "seq"), ("js", "js")):
        base, other = rows.get(f"{prefix}-ce10-s0"), rows.get(f"{prefix}-ce10-s1")
        if not base or not other:
            continue
        for qty, get in (("decision step", lambda r: r["step"]),
                         ("shared with full", lambda r: None if r["shared"] is None else r["shared"][0])):
            b, o = get(base), get(other)
            spread = None if b is None or o is None else abs(b - o)
            shifts = []
            for ce in (5, 20):
                r = rows.get(f"{prefix}-ce{ce}-s0")
                v = None if r is None else get(r)
                shifts.append(None if v is None or b is None else v - b)
            within = "-" if spread is None or None in shifts else ("yes" if all(abs(s) <= spread for s in shifts)
                                                                      else "no")
            fmt = lambda x: "-" if x is None else f"{x:+d}"
            lines.append(f"| {crit} | {qty} | {fmt(shifts[0])} | {fmt(shifts[1])} | "
                         f"{'-' if spread is None else spread} | {within} |")
    if genos:
        space = next(iter(genos.values())).space
        chance = random_agreement(space)
        lines += ["", "## Agreement with its yardsticks (shared (node, input, operation) choices of 8)", "",
                  (f"Random pairs ({chance['draws']:.0f} draws): mean {chance['shared_mean']:.2f}, "
                  f"95th percentile {chance['shared_p95']:.0f}, 99th {chance['shared_p99']:.0f}.")]
        if len(fulls) >= 2:
            ag = agreement(genos[fulls[0]], genos[fulls[1]])
            lines.append(f"Full vs full (seeds 0 and 1): {ag.shared}/{ag.total} shared, {ag.edges_shared} edges "
                         f"shared, {ag.ops_shared} of them with the same operation.")
        lines += ["", "| arm | vs full s0 | vs full s1 |", "|---|---:|---:|"]
        for n, a in arms.items():
            if a["method"] != "lth":
                continue
            cells = [f"{agreement(genos[fulls[s]], genos[n]).shared}/8" if s in fulls else "-" for s in (0, 1)]
            lines.append(f"| {n} | {cells[0]} | {cells[1]} |")
    lines += ["", "## Score fidelity: replayed decisions vs the full search's complete record at that check", "",
              ("| full search | criterion | node decisions agreeing | operation decisions agreeing | of which final "
              "(one op) |"), "|---|---|---:|---:|---:|"]
    for seed, n in sorted(fulls.items()):
        for crit in ("js", "sequential"):
            table = decision_fidelity(trajs[n], quick_stability(crit))
            nodes, ops = table[table["kind"] == "edges"], table[table["kind"] == "ops"]
            final = ops[ops["n_kept"] == 1]
            frac = lambda t: f"{int(t['agree'].sum())}/{len(t)}"
            lines.append(f"| seed {seed} | {crit} | {frac(nodes)} | {frac(ops)} | {frac(final)} |")
    lines += loop_settings_table(arms, trajs)
    return "\n".join(lines) + "\n"


def signal_to_noise(trajectory: dict) -> float:
    """Median per-step |mean| / std of the alpha gradients over every check, edge and operation."""
    import numpy as np

    ratios = [abs(m) / np.sqrt(v) for c in trajectory["checks"] for arch in c["archs"] for e in arch["edges"]
              for m, v in zip(e.get("grad_mean", ()), e.get("grad_var", ())) if v > 0]
    return float(np.median(ratios)) if ratios else float("nan")


def loop_settings_table(arms: dict[str, dict], trajs: dict[str, dict]) -> list[str]:
    """Full searches with the project's loop settings and with PC-DARTS's: what the evidence says."""
    lines = ["", "## Search-loop settings: the project's vs PC-DARTS's (full searches, seed 0)", "",
             ("| arm | final supernet val Dice | median per-step alpha-gradient SNR | largest operation weight at "
             "the end (uniform 0.125) | search s |"), "|---|---:|---:|---:|---:|"]
    for n in ("full-s0", "full-pcdarts-s0"):
        if n not in arms:
            continue
        t = trajs[n]
        dice = next((r["val_dice"] for r in reversed(t["epochs"]) if r.get("val_dice") is not None), float("nan"))
        top = max(max(e["alpha"]) for arch in t["checks"][-1]["archs"] for e in arch["edges"])
        lines.append(f"| {n} | {dice:.4f} | {signal_to_noise(t):.3f} | {top:.3f} | {arms[n]['search_seconds']:.0f} |")
    return lines


def main() -> None:
    """Runs the missing arms (unless ``--summary``), then prints and writes the tables."""
    args = parse_args()
    if not args.summary:
        run_arms(args)
    text = summary(args)
    print(text)
    (args.results / "tables.md").write_text(text)


if __name__ == "__main__":
    main()
