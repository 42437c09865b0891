"""``evaluate``: patient-level Dice / HD95 of a registered U-Net on one split."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import click

from iac.commands.common import (
    build_config,
    echo_done,
    prepared_folder,
    setup_logging,
    step_run,
    tracker_for,
)
from iac.config import EvalConfig, to_dict

# Model-version tags copied onto the evaluate run so `stats` can select by them.
COPIED_TAGS = ("skip", "method", "seed", "data_fingerprint", "pretrained", "genotype", "backbone", "dataset")


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
    from iac import registry
    from iac.data.store import PreparedDataset
    from iac.eval.evaluate import evaluate_network
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
    tags = _run_tags(cfg, data, config, mtags, extra_tags)
    with step_run("evaluate", tags, run_name=f"evaluate-{cfg.split}") as run:
        tracker = tracker_for(run)
        tracker.log_params(to_dict(cfg))
        with tempfile.TemporaryDirectory() as tmp:
            pred_dir = Path(tmp) / "predictions" if cfg.save_predictions else None
            result = evaluate_network(
                net, data, cfg.split, device, cfg.batch_size, cfg.empty_policy, predictions_dir=pred_dir
            )
            _log_per_case(result.per_case, Path(tmp), cfg, data, tags, tracker)
            if pred_dir is not None:
                tracker.log_artifact(pred_dir, "predictions")
        tracker.log_metrics({**result.aggregates, "seconds_per_case": result.seconds_per_case})
        dice = result.aggregates["dice_patient_mean_fg"]
        # Validation Dice of a retrained cell goes back to the cell's version.
        if cfg.split == "val" and mtags.get("skip") == "iac" and mtags.get("genotype", "").startswith("models:/"):
            cell = registry.resolve(mtags["genotype"])
            registry.set_version_tags(cell.name, cell.version, {"val_dice": f"{dice:.6f}", "val_dice_model": cfg.model})
            registry.update_champion(cell.name, cell.tags.get("data_fingerprint", data.fingerprint))
        outputs = {"run_id": run.info.run_id, "dice": dice, "split": cfg.split, "method": tags["method"]}
        tracker.set_tags({"iac_outputs": json.dumps(outputs)})
    echo_done("evaluate", run, f"mean foreground Dice (patient level) {dice:.4f} on {cfg.split}")
    return outputs


def _run_tags(cfg: EvalConfig, data, config: dict[str, Any], mtags: dict[str, str],
              extra_tags: dict[str, str] | None) -> dict[str, Any]:
    """The evaluate run's tags: the model version's (COPIED_TAGS) plus what was evaluated where."""
    tags: dict[str, Any] = {k: mtags[k] for k in COPIED_TAGS if k in mtags}
    tags.update(
        {
            "dataset": data.name,
            "backbone": config.get("backbone_name", mtags.get("backbone", "")),
            "split": cfg.split,
            "model_uri": cfg.model,
            "method": model_method(mtags),
            "eval_data_fingerprint": data.fingerprint,
        }
    )
    tags.setdefault("data_fingerprint", data.fingerprint)
    tags.update(extra_tags or {})
    return tags


def _log_per_case(per_case, folder: Path, cfg: EvalConfig, data, tags: dict[str, Any], tracker) -> None:
    """Save ``per_case.csv`` with its JSON sidecar (what ``stats`` reads back) and log both."""
    from iac.eval.per_case import save_per_case

    meta = {
        "empty_policy": cfg.empty_policy,
        "dataset": data.name,
        "data_fingerprint": data.fingerprint,
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
@click.option("--empty-policy", default="dice1_hd0", show_default=True, help="Empty-structure policy (dice1_hd0 or nan).")
@click.option("--save-predictions", type=click.BOOL, default=False, show_default=True, help="Log NIfTI predictions on the original grids (true/false).")
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True)
def evaluate(model: str, data: str, split: str, empty_policy: str, save_predictions: bool, batch_size: int, device: str) -> None:
    """Evaluate a trained U-Net per patient and write per_case.csv."""
    setup_logging()
    cfg = build_config(
        EvalConfig,
        model=model,
        data=Path(data),
        split=split,
        empty_policy=empty_policy,
        save_predictions=save_predictions,
        batch_size=int(batch_size),
        device=device,
    )
    prepared_folder("data", data)  # after the values: a usage error names the first bad option
    try:
        run_evaluate(cfg)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
