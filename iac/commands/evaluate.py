"""``evaluate``: patient-level Dice / HD95 / NSD of a registered U-Net on one split."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import click

from iac.commands.common import (
    build_config,
    echo_done,
    log_dataset_input,
    optional,
    prepared_folder,
    setup_logging,
    step_run,
    tracker_for,
)
from iac.commands.store import open_store
from iac.config import EvalConfig, to_dict

# Model-version tags copied onto the evaluate run so `stats` can select by them.
COPIED_TAGS = ("skip", "method", "seed", "data_fingerprint", "pretrained", "genotype", "backbone", "dataset")


class NamedValues(click.ParamType):
    """``"LV=1.5,RV=3"`` -> ``(("LV", 1.5), ("RV", 3.0))``; empty (or none) -> ``()``."""

    name = "name=mm,..."

    def convert(self, value: Any, param, ctx) -> tuple[tuple[str, float], ...]:
        if isinstance(value, tuple):
            return value
        pairs = []
        for item in (optional(str(value)) or "").split(","):
            if not item.strip():
                continue
            name, sep, number = item.partition("=")
            try:
                pairs.append((name.strip(), float(number)))
            except ValueError:
                self.fail(f"{item.strip()!r} is not name=mm (e.g. 'LV=1.5,RV=3')", param, ctx)
            if not sep or not name.strip():
                self.fail(f"{item.strip()!r} is not name=mm (e.g. 'LV=1.5,RV=3')", param, ctx)
        return tuple(pairs)


def model_method(tags: dict[str, str]) -> str:
    """The method name ``stats`` compares, from a U-Net version's tags.

    ``iac-<cell method>`` for implanted cells, ``identity`` for the plain
    baseline, ``identity-extra`` for the plain U-Net trained for the same
    extra epochs from the baseline, otherwise the skip kind.
    """
    skip = tags.get("skip", "identity")
    if skip == "iac":
        return f"iac-{tags.get('cell_method', 'unknown')}"
    if skip == "identity" and tags.get("pretrained"):
        return "identity-extra"
    return skip


def run_evaluate(cfg: EvalConfig, extra_tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Evaluate ``cfg.model`` on ``cfg.split`` inside its own MLflow run; returns outputs."""
    open_store()
    from iac import registry
    from iac.data.store import PreparedDataset
    from iac.eval.evaluate import evaluate_network, structure_tolerances
    from iac.train.device import resolve_device

    data = PreparedDataset(cfg.data)
    device = resolve_device(cfg.device)
    net, config, mtags = registry.load_unet(cfg.model, device=str(device))
    trained_fp = config.get("data_fingerprint") or mtags.get("data_fingerprint")
    if trained_fp and trained_fp != data.fingerprint:
        click.echo(
            f"warning: {cfg.model} was trained on prepared data {trained_fp[:8]}, evaluating on {data.fingerprint[:8]}",
            err=True,
        )
    tags = _run_tags(cfg, data, config, mtags, trained_fp, extra_tags)
    tolerance = structure_tolerances(data, cfg.nsd_tolerance_mm, dict(cfg.nsd_class_tolerance_mm))
    with step_run("evaluate", tags, run_name=f"evaluate-{cfg.split}", system_metrics=True) as run:
        tracker = tracker_for(run)
        log_dataset_input(data.root, data.name, data.fingerprint, context="evaluation")
        tracker.log_params(to_dict(cfg))
        with tempfile.TemporaryDirectory() as tmp:
            pred_dir = Path(tmp) / "predictions" if cfg.save_predictions else None
            result = evaluate_network(
                net, data, cfg.split, device, cfg.batch_size, cfg.empty_policy, predictions_dir=pred_dir,
                restore=cfg.restore, nsd_class_tolerance_mm=tolerance,
            )
            _log_per_case(result.per_case, Path(tmp), cfg, data, tags, tolerance, tracker)
            if pred_dir is not None:
                tracker.log_artifact(pred_dir, "predictions")
        tracker.log_metrics({**result.aggregates, "seconds_per_case": result.seconds_per_case})
        dice = result.aggregates["dice_patient_mean_fg"]
        # Validation Dice of a retrained cell goes back to the cell's version.
        if cfg.split == "val" and mtags.get("skip") == "iac" and mtags.get("genotype", "").startswith("models:/"):
            registry.record_validation(mtags["genotype"], dice, cfg.model, data.fingerprint)
        outputs = {
            "run_id": run.info.run_id, "dice": dice, "nsd": result.aggregates["nsd_patient_mean_fg"],
            "split": cfg.split, "method": tags["method"],
        }
        tracker.set_tags({"iac_outputs": json.dumps(outputs)})
    echo_done("evaluate", run, f"mean foreground Dice (patient level) {dice:.4f} on {cfg.split}")
    return outputs


def _run_tags(cfg: EvalConfig, data, config: dict[str, Any], mtags: dict[str, str], trained_fp: str | None,
              extra_tags: dict[str, str] | None) -> dict[str, Any]:
    """The evaluate run's tags: the model version's (COPIED_TAGS) plus what was evaluated where.

    ``data_fingerprint`` stays the data the model was trained on (absent when
    unknown); ``eval_data_fingerprint`` is the data evaluated here.
    """
    tags: dict[str, Any] = {k: mtags[k] for k in COPIED_TAGS if k in mtags}
    tags.update(
        {
            "dataset": data.name,
            "backbone": config.get("backbone_name", mtags.get("backbone", "")),
            "split": cfg.split,
            "model_uri": cfg.model,
            "method": model_method(mtags),
            "eval_data_fingerprint": data.fingerprint,
            "empty_policy": cfg.empty_policy,
            "restore": cfg.restore,
        }
    )
    if trained_fp:
        tags["data_fingerprint"] = trained_fp
    tags.update(extra_tags or {})
    return tags


def _log_per_case(per_case, folder: Path, cfg: EvalConfig, data, tags: dict[str, Any],
                  tolerance: dict[str, float], tracker) -> None:
    """Save ``per_case.csv`` with its JSON sidecar (what ``stats`` reads back) and log both."""
    from iac.eval.per_case import save_per_case

    meta = {
        "empty_policy": cfg.empty_policy,
        "restore": cfg.restore,
        "nsd_tolerance_mm": tolerance,
        "dataset": data.name,
        "eval_data_fingerprint": data.fingerprint,
        "data_fingerprint": tags.get("data_fingerprint"),
        "split": cfg.split,
        "model": cfg.model,
        "method": tags["method"],
        "seed": tags.get("seed"),
        "backbone": tags.get("backbone"),
    }
    csv = save_per_case(per_case, folder / "per_case.csv", meta)
    tracker.log_artifact(csv)
    if csv.with_suffix(".json").exists():
        tracker.log_artifact(csv.with_suffix(".json"))


@click.command("evaluate")
@click.option("--model", required=True, help="models:/name/N, models:/name@alias or runs:/<id>/model.")
@click.option("--data", required=True, help="Prepared dataset folder.")
@click.option("--split", default="test", show_default=True, help="train, val or test.")
@click.option("--empty-policy", default=EvalConfig.empty_policy, show_default=True,
              help="Empty structures: dice1_hd0 (scored), or nan (an empty reference is not scored).")
@click.option("--restore", default=EvalConfig.restore, show_default=True,
              help="Back to the original grid: probabilities (linear, then argmax) or labels (nearest).")
@click.option("--nsd-tolerance", default=EvalConfig.nsd_tolerance_mm, show_default=True, type=float,
              help="Normalised surface Dice tolerance in mm of every class and region.")
@click.option("--nsd-class-tolerances", default="", type=NamedValues(), show_default=True,
              help="Per-class or per-region NSD tolerances in mm, e.g. 'LV=1.5,RV=3'.")
@click.option("--save-predictions", type=click.BOOL, default=False, show_default=True, help="Log NIfTI predictions on the original grids (true/false).")
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True)
@click.option("--nnunet-dataset", default="", help="A registered nnU-Net network: the nnU-Net dataset the prepared data were "
              "exported to (empty = the model's nnunet_dataset tag).")
def evaluate(**o: Any) -> None:
    """Evaluate a trained U-Net per patient and write per_case.csv."""
    setup_logging()
    cfg = build_config(
        EvalConfig,
        model=o["model"],
        data=Path(o["data"]),
        split=o["split"],
        empty_policy=o["empty_policy"],
        restore=o["restore"],
        nsd_tolerance_mm=o["nsd_tolerance"],
        nsd_class_tolerance_mm=o["nsd_class_tolerances"],
        save_predictions=o["save_predictions"],
        batch_size=int(o["batch_size"]),
        device=o["device"],
    )
    prepared_folder("data", o["data"])  # after the values: a usage error names the first bad option
    from iac.commands.nnunet_steps import is_nnunet_model, run_nnunet_evaluate

    try:
        if is_nnunet_model(cfg.model):  # nnU-Net's predictor on the exported images, scored the same way
            run_nnunet_evaluate(cfg, optional(o["nnunet_dataset"]))
            return
        if optional(o["nnunet_dataset"]):
            raise click.BadParameter(f"{cfg.model} is not a registered nnU-Net network (tag backbone=nnunet)",
                                     param_hint="--nnunet-dataset")
        run_evaluate(cfg)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
