"""Cheap design proxies for the test bed: can the skip cell matter on it?

Usage (from the project root)::

    python benchmarks/testbed_design.py [--out benchmarks/results/testbed_design] \\
        [--work data/testbed_design] [--variant testbed] [--phantom-seed 101] [--patients 20] [--size 48] \\
        [--epochs 40] [--extra-epochs 10] [--threads 1] [--arms baseline,wide,...]

Prepares one small cohort under ``--work`` (``--variant`` ``testbed`` or
``classic``; the design calibration cohort is ``phantom_seed`` 101, seed 202
is kept unused for confirmation), then runs the arms one after another, each
writing its row to ``<out>/<variant>-s<seed>-p<patients>-n<size>-e<epochs>.jsonl``
as soon as it finishes (a rerun skips the arms already there, so the script is resumable):

- ``baseline``: the small U-Net (8, 16, 32, 64), identity skips, ``--epochs``
  epochs; records whether validation Dice plateaued (less than 0.5 point of
  best validation Dice gained over the last fifth of the epochs).
- ``wide``: the same U-Net twice as wide (16, 32, 64, 128), same budget: a
  clear gain means the baseline's error is reducible, not noise.
- ``continued``: the baseline continued ``--extra-epochs`` with identity skips
  (the same-extra-training control of the cells).
- ``ablate-skips``: the trained baseline evaluated with its skip features
  zeroed (no retraining): how much of the score the skip path carries.
- ``--describe N``: no training; the LV/RV volumes, ejection fractions and
  LV mass per pathology group of the first N test-bed patients.
- ``cell-<name>``: a fixed cell implanted in every skip of the plateaued
  baseline and retrained ``--extra-epochs`` (hand-picked cells and random
  cells from the search space).

Every arm is evaluated on the test patients (patient-mean foreground Dice and
per class). Timings are wall seconds on whatever the cores were doing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from iac.config import PrepareConfig, SearchConfig, TrainConfig  # noqa: E402
from iac.data.prepare import prepare_dataset  # noqa: E402
from iac.data.store import PreparedDataset  # noqa: E402
from iac.eval.evaluate import evaluate_network  # noqa: E402
from iac.models import create_backbone  # noqa: E402
from iac.nas.genotype import CellGenotype, Genotype, SearchSpace, random_genotype  # noqa: E402
from iac.tracking import Tracker  # noqa: E402
from iac.train.retrain import load_pretrained, train_network  # noqa: E402

SMALL = (8, 16, 32, 64)
WIDE = (16, 32, 64, 128)
# Hand-picked cells (4 nodes, 2 inputs each; node 0/1 are the cell inputs): one of
# cheap pooling, one of separable convolutions, one of dilated convolutions.
HAND_PICKED = {
    "pool": ((("avg_pool_3x3", 0), ("max_pool_3x3", 1)), (("skip_connect", 0), ("avg_pool_3x3", 2)),
             (("max_pool_3x3", 1), ("avg_pool_3x3", 3)), (("skip_connect", 0), ("avg_pool_3x3", 4))),
    "sepconv": ((("sep_conv_3x3", 0), ("sep_conv_3x3", 1)), (("sep_conv_3x3", 0), ("sep_conv_5x5", 2)),
                (("sep_conv_3x3", 1), ("sep_conv_3x3", 3)), (("skip_connect", 0), ("sep_conv_3x3", 4))),
}
DEFAULT_ARMS = "baseline,wide,continued,cell-sepconv,cell-pool,cell-random0,cell-random1"


def plateau(history: list[dict[str, float]]) -> dict[str, float]:
    """Best validation Dice at the end and at 4/5 of the epochs, and the gain between them (points)."""
    vals = [h.get("val_dice", float("nan")) for h in history]
    best = np.fmax.accumulate(np.nan_to_num(vals, nan=0.0))
    cut = max(round(0.8 * len(best)) - 1, 0)
    return {"val_best": float(best[-1]), "val_best_at_4_5": float(best[cut]),
            "plateau_gain_points": float(100 * (best[-1] - best[cut]))}


def evaluate(net: torch.nn.Module, data: PreparedDataset) -> dict[str, float]:
    """Test-patient Dice: patient-mean foreground and per class."""
    res = evaluate_network(net, data, split="test", progress=False)
    agg = res.aggregates
    out = {"test_dice_fg": agg["dice_patient_mean_fg"]}
    fg = res.per_case[res.per_case["label"] == "mean_fg"]
    out["patient_dice_fg"] = {str(k): float(v) for k, v in fg.groupby("patient")["dice"].mean().items()}
    out.update({k: v for k, v in agg.items() if k.startswith("dice_") and k.split("_", 1)[1] in ("RV", "myocardium", "LV")})
    return out


def cell_genotype(name: str, space: SearchSpace) -> Genotype:
    """A hand-picked cell by name, or ``random<k>`` drawn with seed k."""
    if name.startswith("random"):
        return random_genotype(space, np.random.default_rng(int(name[len("random"):])))
    return Genotype(space=space, cells=(CellGenotype(HAND_PICKED[name]),))


def describe(n_patients: int, seed: int, size: int) -> None:
    """Print the cohort's LV/RV volumes, ejection fractions and LV mass per group (from the label maps)."""
    from iac.data.testbed import synthesize_testbed_patient

    rows: dict[str, list[tuple[float, ...]]] = {}
    for index in range(1, n_patients + 1):
        p = synthesize_testbed_patient(index, seed, size)
        (_, ed), (_, es) = p["frames"][1], p["frames"][p["es"]]
        ml = p["spacing"][0] * p["spacing"][1] * p["spacing"][2] / 1000.0  # mL per voxel
        lv = ((ed == 3).sum() * ml, (es == 3).sum() * ml)
        rv = ((ed == 1).sum() * ml, (es == 1).sum() * ml)
        mass = (ed == 2).sum() * ml * 1.05  # g (myocardial density 1.05 g/mL)
        rows.setdefault(p["group"], []).append((lv[0], 100 * (1 - lv[1] / lv[0]), rv[0], 100 * (1 - rv[1] / rv[0]), mass))
    print("| group | patients | LV EDV (mL) | LV EF (%) | RV EDV (mL) | RV EF (%) | LV mass (g) |")
    print("|---|---|---|---|---|---|---|")
    for group, r in sorted(rows.items()):
        a = np.array(r)
        cols = " | ".join(f"{a[:, k].min():.0f}–{a[:, k].max():.0f}" for k in range(5))
        print(f"| {group} | {len(r)} | {cols} |")


def table(path: Path) -> None:
    """Print a results file as the Markdown table of ``docs/datasets.md``."""
    print("| arm | epochs | parameters | val best | gain over last fifth (points) | test Dice fg | RV | myocardium | LV | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for line in path.read_text().splitlines():
        r = json.loads(line)
        print(f"| {r['arm']} | {r['epochs']} | {r['parameters']:,} | {r['val_best']:.3f} | {r['plateau_gain_points']:.1f} "
              f"| {r['test_dice_fg']:.3f} | {r['dice_RV']:.3f} | {r['dice_myocardium']:.3f} | {r['dice_LV']:.3f} | {r['seconds']:.0f} |")


def ckpt_dir(out: Path, name: str) -> Path:
    """Checkpoint folder of one arm (its name carries the extra-epoch settings)."""
    return out / ("ckpt-" + name.replace("/", "_"))


def extend_test(args: argparse.Namespace, tag: str) -> None:
    """Evaluate every finished arm of ``tag`` on unseen patients of the same cohort seed.

    The training cohort's test split is small (a few patients); patients
    ``--patients + 1 .. --extend-test`` come from the same generator and seed
    but were never trained, validated or selected on. They are prepared at the
    training cohort's spacing and slice size, so every network sees inputs
    like its training data. Rows go to ``<tag>-ext<N>.jsonl``.
    """
    out = args.work / tag
    train_data = PreparedDataset(out / "data")
    rows = [json.loads(line) for line in (args.out / f"{tag}.jsonl").read_text().splitlines()]
    results = args.out / f"{tag}-ext{args.extend_test}.jsonl"
    done = {json.loads(line)["arm"] for line in results.read_text().splitlines()} if results.is_file() else set()
    ids = [f"patient{i:03d}" for i in range(1, args.extend_test + 1)]
    split = args.work / f"{tag}-ext{args.extend_test}-split.json"
    split.write_text(json.dumps({"train": ids[:args.patients], "val": [], "test": ids[args.patients:]}))
    prep = prepare_dataset(
        PrepareConfig(out=args.work / f"{tag}-ext{args.extend_test}", phantom_variant=args.variant,
                      phantom_seed=args.phantom_seed, phantom_patients=args.extend_test, phantom_size=args.size,
                      spacing=float(train_data.spacing[0]), slice_size=int(train_data.slice_size),
                      split_file=split, workers=1),
        progress=False,
    )
    data = PreparedDataset(prep.root)
    space = SearchSpace.from_config(SearchConfig())
    # Arms trained before checkpoints were named with their settings share ``ckpt-<arm>``: that
    # folder holds the weights of the last such arm to finish, and only that arm can use it.
    last_of = {row["arm"].split("/")[0]: row["arm"] for row in rows}
    for row in rows:
        arm = row["arm"]
        ckpt = ckpt_dir(out, arm) / "best.pt"
        if arm in ("baseline", "baseline-again"):
            ckpt = out / "baseline_state.pt"
        elif not ckpt.is_file() and last_of[arm.split("/")[0]] == arm:
            ckpt = out / f"ckpt-{arm.split('/')[0]}" / "best.pt"
        if arm in done or arm == "ablate-skips" or not ckpt.is_file():
            continue
        state = torch.load(ckpt, weights_only=True)
        state = state.get("model", state)
        kwargs = {}
        if row.get("cell"):
            g = cell_genotype(arm.split("/")[0][len("cell-"):], space)
            kwargs = {"skip": "iac", "skip_kwargs": {"genotype": g.to_dict()}}
        net = create_backbone("unet", data.in_channels, data.num_classes,
                              features=WIDE if arm == "wide" else SMALL, **kwargs)
        net.load_state_dict(state)
        rec = {"arm": arm, "tag": tag, "test_patients": len(data.patients("test")), **evaluate(net, data)}
        with results.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps({k: v for k, v in rec.items() if k != "patient_dice_fg"}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/testbed_design"), help="folder of the results files")
    parser.add_argument("--work", type=Path, default=Path("data/testbed_design"), help="prepared cohort and checkpoints")
    parser.add_argument("--variant", default="testbed", choices=["testbed", "classic"])
    parser.add_argument("--phantom-seed", type=int, default=101, help="design calibration cohort (202 is kept for confirmation)")
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--extra-epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--extra-lr", type=float, default=None, help="learning rate of the extra epochs (default: --lr / 3)")
    parser.add_argument("--freeze-backbone", action="store_true",
                        help="cell arms train only the cell and its projection (the backbone's weights stay fixed)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--arms", default=DEFAULT_ARMS)
    parser.add_argument("--describe", type=int, default=0, help="only print volumes and EFs of this many test-bed patients")
    parser.add_argument("--table", type=Path, default=None, help="only print this results file as a Markdown table")
    parser.add_argument("--extend-test", type=int, default=0, metavar="N",
                        help="no training: evaluate the finished arms' selected weights on patients "
                             "--patients+1 .. N of the same cohort seed (never trained on), prepared at the "
                             "training cohort's spacing and slice size")
    args = parser.parse_args()
    if args.table:
        table(args.table)
        return
    if args.describe:
        describe(args.describe, args.phantom_seed, args.size)
        return
    torch.set_num_threads(args.threads)
    tag = f"{args.variant}-s{args.phantom_seed}-p{args.patients}-n{args.size}-e{args.epochs}"
    if args.extend_test:
        extend_test(args, tag)
        return
    out = args.work / tag
    out.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / f"{tag}.jsonl"
    done = {json.loads(line)["arm"] for line in results.read_text().splitlines()} if results.is_file() else set()

    t0 = time.perf_counter()
    prep = prepare_dataset(
        PrepareConfig(out=out / "data", phantom_variant=args.variant, phantom_seed=args.phantom_seed,
                      phantom_patients=args.patients, phantom_size=args.size, workers=1),
        progress=False,
    )
    data = PreparedDataset(prep.root)
    prep_s = time.perf_counter() - t0
    space = SearchSpace.from_config(SearchConfig())
    base_cfg = TrainConfig(data=prep.root, epochs=args.epochs, lr=args.lr, seed=args.seed)
    extra_lr = args.lr / 3 if args.extra_lr is None else args.extra_lr
    extra_cfg = TrainConfig(data=prep.root, epochs=args.extra_epochs, lr=extra_lr, seed=args.seed)
    # Arms of the extra epochs run with other settings than the first proxies' (10 epochs at lr / 3,
    # whole network trained) carry those settings in their name, so one results file holds both.
    suffix = ""
    if (args.extra_epochs, args.extra_lr, args.freeze_backbone) != (10, None, False):
        suffix = f"/x{args.extra_epochs}-lr{extra_lr:g}" + ("-frozen" if args.freeze_backbone else "")
    if args.seed != 0:  # another training seed of the same arm (the baseline stays the seed-0 one)
        suffix = (suffix or "/") + ("-" if suffix else "") + f"seed{args.seed}"
    base_ckpt = out / "baseline_state.pt"

    def record(arm: str, row: dict) -> None:
        row = {"arm": arm, "tag": tag, "prepare_seconds": prep_s, **row}
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    arms = args.arms.split(",")
    if "baseline" in done and not base_ckpt.is_file() and any(a not in ("baseline", "wide") for a in arms):
        # The results say the baseline ran, but its weights are gone (a fresh work folder):
        # train it again, recorded under its own name so the two runs can be compared.
        arms.insert(0, "baseline-again")
    for arm in arms:
        name = arm if arm in ("baseline", "baseline-again", "wide", "ablate-skips") else arm + suffix
        if name in done:
            continue
        start = time.perf_counter()
        if arm == "ablate-skips":
            # The trained baseline evaluated with every skip feature replaced by zeros
            # (no retraining): how much of its score the skip path carries.
            net = create_backbone("unet", data.in_channels, data.num_classes, features=SMALL)
            net.load_state_dict(torch.load(base_ckpt, weights_only=True))
            for module in net.skip_modules:
                module.register_forward_hook(lambda _m, _i, output: torch.zeros_like(output))
            row = {"epochs": 0, "parameters": sum(p.numel() for p in net.parameters())}
            row.update(evaluate(net, data))
            row.update({"seconds": time.perf_counter() - start, "val_best": float("nan"), "plateau_gain_points": float("nan")})
            record(name, row)
            continue
        if arm in ("baseline", "baseline-again", "wide"):
            torch.manual_seed(args.seed)
            widths = WIDE if arm == "wide" else SMALL
            net = create_backbone("unet", data.in_channels, data.num_classes, features=widths)
            res = train_network(base_cfg, net, data, Tracker(), ckpt_dir(out, name), progress=False)
            if arm != "wide":
                torch.save(res.state, base_ckpt)
            row = {"epochs": args.epochs, "widths": list(widths), **plateau(res.history)}
        else:
            if not base_ckpt.is_file():
                raise SystemExit(f"arm {arm} needs the baseline arm first ({base_ckpt} is missing)")
            state = torch.load(base_ckpt, weights_only=True)
            if arm == "continued":
                kwargs, cell = {}, None
            else:
                g = cell_genotype(arm[len("cell-"):], space)
                kwargs, cell = {"skip": "iac", "skip_kwargs": {"genotype": g.to_dict()}}, g.to_dict()["cells"]
            torch.manual_seed(args.seed)
            net = create_backbone("unet", data.in_channels, data.num_classes, features=SMALL, **kwargs)
            load_pretrained(net, state)
            if args.freeze_backbone and cell is not None:
                for pname, param in net.named_parameters():
                    param.requires_grad_(".cell." in pname or ".proj." in pname)
            res = train_network(extra_cfg, net, data, Tracker(), ckpt_dir(out, name), progress=False)
            row = {"epochs": args.extra_epochs, "cell": cell, **plateau(res.history)}
        row.update(evaluate(res.net, data))
        row.update({"seconds": time.perf_counter() - start, "parameters": res.n_parameters,
                    "extra_lr": extra_lr, "train_seed": args.seed, "frozen_backbone": bool(args.freeze_backbone and arm.startswith("cell-"))})
        record(name, row)


if __name__ == "__main__":
    main()
