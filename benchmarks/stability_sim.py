"""Decision quality of the IAC-LTH stability criteria on simulated edges.

Usage (from the project root)::

    python benchmarks/stability_sim.py [--out benchmarks/results/stability_sim] [--trajectory TRAJ.json]

Every run is one edge of the default search space searched by torch Adam with
the project's architecture settings and pruned by the real policy
(:mod:`iac.nas.simulate`). Phases, each appending one JSON line per
(scenario, seed block) to ``<out>/<phase>.jsonl`` as it goes and skipping
blocks already there when run again:

1. ``calibrate``: every (``seq_error``, ``seq_effect``, ``seq_miss``) of the grid on the
   calibration seeds; the setting that misses the fewest targets, then saves
   the most architecture steps, is chosen (:func:`iac.nas.simulate.choose`).
2. ``report``: the JS test (project defaults) and the chosen sequential test
   on the report seeds (never used for the choice).
3. ``invariance``: both again with ``check_every`` and the noise level halved
   and doubled, on the report seeds.
4. ``live``: with ``--trajectory`` (checks carrying ``grad_mean`` /
   ``grad_var``), alpha-gradient noise replayed from a live search;
   skipped with a note otherwise.

Prints the tables (also ``<out>/tables.md``), writes ``<out>/summary.json``
and the figure (``--figure``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from matplotlib.figure import Figure

from iac.config import StabilityConfig, to_dict
from iac.nas.simulate import (
    LiveSource,
    MeritSource,
    SimSettings,
    Targets,
    check_targets,
    choose,
    default_scenarios,
    live_edges,
    run_block,
    summarise,
)
from iac.nas.trajectory import load_trajectory

# Seed blocks: calibration seeds start at 0, report seeds here (disjoint for any block count below it).
REPORT_SEED0 = 1000
# Scenarios of the invariance phase (the rest of the table adds time, not information on invariance).
INVARIANCE_SCENARIOS = ("pure noise", "SNR 0.05", "SNR 0.1", "SNR 0.2", "weight-decay bound: SNR 0.5")
# Factors applied to check_every and to the noise level in the invariance phase.
INVARIANCE_FACTORS = (0.5, 2.0)
JS, SEQ = "js", "sequential"


def parse_args() -> argparse.Namespace:
    """The command line (every default is the benchmark recorded in docs/benchmarks.md)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/stability_sim"))
    parser.add_argument("--figure", type=Path, default=Path("docs/figures/stability_sim.png"))
    parser.add_argument("--trajectory", type=Path, default=None, help="trajectory.json with grad_mean/grad_var")
    parser.add_argument("--budget", type=int, default=SimSettings.budget, help="architecture steps of the full search")
    parser.add_argument("--check-every", type=int, default=SimSettings.check_every)
    parser.add_argument("--runs", type=int, default=SimSettings.runs, help="runs per seed block")
    parser.add_argument("--calib-blocks", type=int, default=3)
    parser.add_argument("--report-blocks", type=int, default=5)
    parser.add_argument("--errors", default="0.1,0.2,0.3", help="seq_error grid")
    parser.add_argument("--effects", default="80,120,160", help="seq_effect grid")
    parser.add_argument("--misses", default="0.01,0.05", help="seq_miss grid")
    parser.add_argument("--live-repeats", type=int, default=4, help="runs per recorded edge and seed block")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return parser.parse_args()


class Store:
    """JSON lines of finished seed blocks, keyed; new blocks are appended as soon as they finish."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.blocks = {}
        if path.exists():
            for line in path.read_text().splitlines():
                rec = json.loads(line)
                self.blocks[rec["key"]] = rec["block"]

    def block(self, key: str, run):
        """The block stored under ``key``, or ``run()``'s result, appended to the file at once."""
        if key not in self.blocks:
            started = time.perf_counter()
            self.blocks[key] = run()
            with self.path.open("a") as f:
                f.write(json.dumps({"key": key, "block": self.blocks[key]}) + "\n")
            print(f"  {key.split('|')[1]} | seed {key.split('|')[2]}: {time.perf_counter() - started:.0f} s", flush=True)
        return self.blocks[key]


def _key(variant: str, scenario: str, seed: int, cfgs, settings: SimSettings) -> str:
    """A block's key: variant, scenario, seed and a digest of the criteria and settings it ran with."""
    tag = json.dumps([sorted((n, to_dict(c)) for n, c in cfgs.items()), dataclasses.asdict(settings)], sort_keys=True)
    return f"{variant}|{scenario}|{seed}|{hashlib.sha1(tag.encode()).hexdigest()[:10]}"


def run_scenarios(store: Store, variant: str, scenarios, settings: SimSettings, cfgs, seeds) -> dict:
    """Summaries per scenario name, every block run (or read) from ``store``."""
    out = {}
    for sc in scenarios:
        blocks = [
            store.block(_key(variant, sc.name, seed, cfgs, settings),
                        lambda seed=seed, sc=sc: run_block(lambda s: MeritSource(sc, settings, settings.runs, s),
                                                           settings, cfgs, seed))
            for seed in seeds
        ]
        out[sc.name] = summarise(blocks, settings, Targets().early_fraction)
    return out


def calibrate(args, settings: SimSettings, scenarios) -> tuple[StabilityConfig, list[dict]]:
    """Runs the grid on the calibration seeds; returns the chosen setting and one row per candidate."""
    grid = {
        f"error {e:g}, effect {x:g}, miss {m:g}": StabilityConfig(criterion=SEQ, seq_error=e, seq_effect=x, seq_miss=m)
        for e in map(float, args.errors.split(",")) for x in map(float, args.effects.split(","))
        for m in map(float, args.misses.split(","))
    }
    print(f"calibrate: {len(grid)} settings x {len(scenarios)} scenarios x {args.calib_blocks} blocks", flush=True)
    store = Store(args.out / "calibrate.jsonl")
    summaries = run_scenarios(store, "calibrate", scenarios, settings, grid, range(args.calib_blocks))
    rows = {name: check_targets(summaries, scenarios, name, settings.budget) for name in grid}
    savings = {name: float(np.mean([summaries[sc.name][name]["saving"] for sc in scenarios])) for name in grid}
    chosen = choose(rows, savings)
    table = [{"setting": name, "missed": sum(not r["met"] for r in rows[name]), "saving": savings[name],
              "chosen": name == chosen} for name in grid]
    return grid[chosen], table


def invariance(args, settings: SimSettings, scenarios, cfgs, base: dict) -> list[dict]:
    """Both criteria with check_every and the noise level scaled; shifts against the report phase."""
    store = Store(args.out / "invariance.jsonl")
    subset = [sc for sc in scenarios if sc.name in INVARIANCE_SCENARIOS]
    seeds = range(REPORT_SEED0, REPORT_SEED0 + args.report_blocks)
    rows = []
    for field, factor in [(f, x) for f in ("check_every", "noise_scale") for x in INVARIANCE_FACTORS]:
        value = getattr(settings, field) * factor
        changed = dataclasses.replace(settings, **{field: type(getattr(settings, field))(value)})
        summaries = run_scenarios(store, f"{field} x{factor:g}", subset, changed, cfgs, seeds)
        for sc in subset:
            for name in cfgs:
                rows.append(_shift_row(f"{field} x{factor:g}", sc.name, name, summaries[sc.name][name],
                                       base[sc.name][name]))
    return rows


def _shift_row(variant: str, scenario: str, name: str, arm: dict, ref: dict) -> dict:
    """How far a variant moved the median decision and the agreement, against the seed-to-seed spread."""
    row = {"variant": variant, "scenario": scenario, "criterion": name}
    for metric in ("median_step", "agree"):
        shift = arm[metric] - ref[metric]
        spread = ref[metric + "_sd"]
        row[metric] = arm[metric]
        row[metric + "_shift"] = shift
        row[metric + "_spread"] = spread
        row[metric + "_within"] = abs(shift) <= spread
    return row


def live(args, cfgs) -> dict | None:
    """Both criteria on alpha-gradient noise replayed from ``--trajectory``; None (with a note) without one."""
    if args.trajectory is None:
        print("live: skipped (no --trajectory with grad_mean / grad_var given)", flush=True)
        return None
    try:
        edges = live_edges(load_trajectory(args.trajectory))
    except ValueError as err:
        print(f"live: skipped ({err})", flush=True)
        return None
    if not edges:
        print(f"live: skipped ({args.trajectory} records no grad_mean / grad_var)", flush=True)
        return None
    steps = edges[0][0]
    settings = SimSettings(budget=int(steps[-1]), check_every=int(steps[0]), runs=len(edges) * args.live_repeats)
    store = Store(args.out / "live.jsonl")
    blocks = [
        store.block(_key("live", str(args.trajectory), seed, cfgs, settings),
                    lambda seed=seed: run_block(lambda s: LiveSource(edges, args.live_repeats, s), settings, cfgs, seed))
        for seed in range(REPORT_SEED0, REPORT_SEED0 + args.report_blocks)
    ]
    return {"edges": len(edges), "settings": dataclasses.asdict(settings),
            "summary": summarise(blocks, settings, Targets().early_fraction)}


def _pct(x: float, sd: float | None = None) -> str:
    """A percentage, with its spread when given."""
    return f"{x:.0f}" if sd is None else f"{x:.0f} ± {sd:.0f}"


def results_table(summaries: dict, names, budget: int) -> str:
    """Markdown: per scenario (``names``, in order) the argmax row and one row per criterion."""
    lines = [
        ("| scenario | arm | final op truly best, % | = full-budget argmax, % | median decision (step, % of budget) "
         "| 90th pct decision | steps saved, % | decided early with no preference, % |"),
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in names:
        s = summaries[scenario]
        a = s["argmax"]
        lines.append(f"| {scenario} | argmax at the budget (at 25 %) | {_pct(a['correct'], a['correct_sd'])} "
                     f"({_pct(a['correct_early'])}) | | | | | |")
        for name in (n for n in s if n != "argmax"):
            m = s[name]
            lines.append(
                f"| | {name} | {_pct(m['correct'], m['correct_sd'])} | {_pct(m['agree'], m['agree_sd'])} "
                f"| {m['median_step']:.0f} ({100 * m['median_step'] / budget:.0f} %) | {m['p90_step']:.0f} "
                f"| {_pct(m['saving'], m['saving_sd'])} | {_pct(m['no_preference'])} |"
            )
    return "\n".join(lines)


def targets_table(rows: list[dict]) -> str:
    """Markdown: every target of one criterion, its value, its limit and whether it is met."""
    lines = ["| target | scenario | value | limit | met |", "|---|---|---:|---:|---|"]
    lines += [f"| {r['target']} | {r['scenario']} | {r['value']:.1f} | {r['limit']:.1f} | {'yes' if r['met'] else '**no**'} |"
              for r in rows]
    return "\n".join(lines)


def invariance_table(rows: list[dict]) -> str:
    """Markdown: per variant, scenario and criterion the shifts against the report run and their spreads."""
    lines = ["| variant | scenario | criterion | median decision (shift; spread) | = argmax, % (shift; spread) | within |",
             "|---|---|---|---:|---:|---|"]
    for r in rows:
        within = "yes" if r["median_step_within"] and r["agree_within"] else "**no**"
        lines.append(f"| {r['variant']} | {r['scenario']} | {r['criterion']} "
                     f"| {r['median_step']:.0f} ({r['median_step_shift']:+.0f}; {r['median_step_spread']:.0f}) "
                     f"| {r['agree']:.0f} ({r['agree_shift']:+.0f}; {r['agree_spread']:.0f}) | {within} |")
    return "\n".join(lines)


def calibration_table(rows: list[dict]) -> str:
    """Markdown: every candidate setting, its missed targets and mean saving, and the one chosen."""
    lines = ["| setting | targets missed | mean steps saved, % | chosen |", "|---|---:|---:|---|"]
    lines += [f"| {r['setting']} | {r['missed']} | {r['saving']:.1f} | {'**yes**' if r['chosen'] else ''} |" for r in rows]
    return "\n".join(lines)


def figure(summaries: dict, scenarios, settings: SimSettings, path: Path) -> None:
    """Per scenario: the full search's accuracy when stopped at each check, and each criterion's decisions."""
    cols = 4
    rows = -(-len(scenarios) // cols)
    fig = Figure(figsize=(3.2 * cols, 2.5 * rows))
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    steps = settings.check_every * np.arange(1, settings.budget // settings.check_every + 1)
    styles = {JS: ("tab:red", "s"), SEQ: ("tab:blue", "o")}
    for ax, sc in zip(axes, scenarios):
        s = summaries[sc.name]
        ax.plot(steps, s["argmax"]["curve"], color="0.4", lw=1.2, label="argmax if stopped here")
        for name, (color, marker) in styles.items():
            m = s[name]
            ax.plot([m["median_step"], m["p90_step"]], [m["correct"]] * 2, color=color, lw=1)
            ax.plot(m["median_step"], m["correct"], marker=marker, color=color, ls="", label=f"{name}: median, p90")
        ax.axvline(Targets().early_fraction * settings.budget, color="0.8", lw=0.8, ls="--")
        ax.set_title(sc.name, fontsize=8)
        ax.set_ylim(-3, 103)
    for ax in axes[len(scenarios):]:
        ax.set_visible(False)
    for ax in axes[::cols]:
        ax.set_ylabel("final op truly best, %", fontsize=8)
    for ax in axes[-cols:]:
        ax.set_xlabel("architecture step", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(f"decision quality per criterion ({settings.budget} steps, check every {settings.check_every}; "
                 "dashed: 25 % of the budget)", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    """Calibrate, report, check invariance and replay live noise; print and write the tables and the figure."""
    args = parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    settings = SimSettings(budget=args.budget, check_every=args.check_every, runs=args.runs)
    scenarios = default_scenarios()
    chosen, calib = calibrate(args, settings, scenarios)
    print(f"chosen: seq_error={chosen.seq_error:g}, seq_effect={chosen.seq_effect:g}, seq_miss={chosen.seq_miss:g}",
          flush=True)
    cfgs = {JS: StabilityConfig(), SEQ: chosen}
    seeds = range(REPORT_SEED0, REPORT_SEED0 + args.report_blocks)
    report = run_scenarios(Store(args.out / "report.jsonl"), "report", scenarios, settings, cfgs, seeds)
    targets = {name: check_targets(report, scenarios, name, settings.budget) for name in cfgs}
    figure(report, scenarios, settings, args.figure)
    inv = invariance(args, settings, scenarios, cfgs, report)
    live_out = live(args, cfgs)
    text = "\n\n".join([
        "## Calibration (calibration seeds)\n\n" + calibration_table(calib),
        "## Report seeds\n\n" + results_table(report, [sc.name for sc in scenarios], settings.budget),
        *(f"## Targets: {name}\n\n" + targets_table(rows) for name, rows in targets.items()),
        "## Invariance (report seeds)\n\n" + invariance_table(inv),
        "## Live noise\n\n" + ("skipped: no trajectory with grad_mean / grad_var" if live_out is None else
                              results_table({"live": live_out["summary"]}, ["live"], live_out["settings"]["budget"])),
    ])
    print(text)
    (args.out / "tables.md").write_text(text + "\n")
    (args.out / "summary.json").write_text(json.dumps(
        {"settings": dataclasses.asdict(settings), "chosen": to_dict(chosen), "calibration": calib,
         "report": report, "targets": targets, "invariance": inv, "live": live_out}, indent=1))


if __name__ == "__main__":
    main()
