"""``iac nnunet``: the nnU-Net v2 backbone (optional extra ``[nnunet]``).

Sub-commands, in pipeline order:

- ``export``: a prepared cohort as an nnU-Net raw dataset (test patients in ``imagesTs``,
  patient-grouped ``splits_final.json``);
- ``plans``: the ``2d_iac`` configuration (architecture with cells, genotype, ``iac`` settings);
- ``train``: one fold with ``nnUNetTrainer`` (the baseline), ``nnUNetTrainerIACSearch`` or
  ``nnUNetTrainerIACRetrain``, in an MLflow run (nnU-Net's losses and pseudo-Dice go to it);
- ``evaluate``: ``nnUNetv2_predict`` output scored per patient into ``per_case.csv`` for ``stats``.

Every bad input (a missing nnU-Net folder, an unknown dataset id, a fold
without a trained baseline, a genotype of another search space, a
configuration that is not 2-D) is one line, before anything is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from iac.commands.common import echo_done, prepared_folder, setup_logging, step_run, tracker_for

BACKBONE = "nnunet"


def _user_errors():
    """The exceptions of the nnU-Net path that are the user's input, reported as one line."""
    from iac.nas.genotype import GenotypeError
    from iac.nnunet.checkpoint import NNUNetCheckpointError
    from iac.nnunet.evaluate import PredictionError
    from iac.nnunet.export import ExportError
    from iac.nnunet.plans import PlansError
    from iac.nnunet.run import NNUNetInputError

    return (GenotypeError, NNUNetCheckpointError, PredictionError, ExportError, PlansError, NNUNetInputError,
            FileExistsError)


@click.group("nnunet")
def nnunet() -> None:
    """Search and retrain cells in a trained 2-D nnU-Net v2 (needs the [nnunet] extra)."""


@nnunet.command("export")
@click.option("--data", required=True, help="Prepared dataset folder.")
@click.option("--dataset-id", required=True, type=int, help="nnU-Net dataset id (1..999).")
@click.option("--name", default="", help="Dataset name in Dataset<ID>_<name> (default: the prepared name).")
@click.option("--folds", default=1, show_default=True, type=int,
              help="1 = the prepared train/val split as fold 0; more = patient-grouped folds.")
@click.option("--overwrite", type=click.BOOL, default=False, show_default=True)
def export(**o: Any) -> None:
    """Write a prepared cohort as an nnU-Net raw dataset under $nnUNet_raw."""
    from iac.nnunet.export import export_nnunet_raw
    from iac.nnunet.run import nnunet_paths

    prepared_folder("data", o["data"])
    try:
        paths = nnunet_paths(("nnUNet_raw",))
        pre = os.environ.get("nnUNet_preprocessed") or None
        result = export_nnunet_raw(o["data"], paths.raw, o["dataset_id"], o["name"] or None, o["folds"], pre,
                                   o["overwrite"])
    except _user_errors() as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"exported {result.n_train_cases} training and {result.n_test_cases} test cases to {result.folder}")


@nnunet.command("plans")
@click.option("--dataset", required=True, help="nnU-Net dataset id or DatasetXXX_name.")
@click.option("--plans", default="nnUNetPlans", show_default=True, help="Plans to build on.")
@click.option("--out-plans", default="nnUNetPlans_iac", show_default=True, help="Plans identifier written (-p).")
@click.option("--base", default="2d", show_default=True, help="The 2-D configuration with the trained baseline.")
@click.option("--configuration", default="2d_iac", show_default=True, help="Name of the configuration written.")
@click.option("--genotype", default="", help="genotype.json of a search (empty before the search).")
@click.option("--settings", default="", help="JSON file of the 'iac' block (IACPlanSettings) to use instead of the defaults.")
def plans(**o: Any) -> None:
    """Write the 2d_iac configuration (network with cells, genotype, search and retrain settings)."""
    from iac.nnunet.plans import IACPlanSettings, iac_block, write_iac_plans
    from iac.nnunet.run import dataset_name, load_plans, nnunet_paths

    try:
        paths = nnunet_paths(("nnUNet_preprocessed",))
        name = dataset_name(o["dataset"], paths)
        load_plans(name, o["plans"], paths)
        out = paths.preprocessed / name / f"{o['out_plans']}.json"
        if o["settings"]:
            settings = IACPlanSettings.from_dict(json.loads(Path(o["settings"]).read_text()))
        elif out.is_file() and o["configuration"] in json.loads(out.read_text()).get("configurations", {}):
            settings = iac_block(json.loads(out.read_text()), o["configuration"])  # keep the settings of the search
        else:
            settings = IACPlanSettings(baseline_plans=o["plans"], baseline_configuration=o["base"])
        genotype = None
        if o["genotype"]:
            if not Path(o["genotype"]).is_file():
                raise click.BadParameter(f"{o['genotype']} does not exist", param_hint="--genotype")
            genotype = Path(o["genotype"]).read_text()
        write_iac_plans(paths.preprocessed / name / f"{o['plans']}.json", out, settings, genotype, o["base"],
                        o["configuration"])
    except _user_errors() as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"wrote configuration {o['configuration']} to {out}")


@nnunet.command("train")
@click.option("--dataset", required=True, help="nnU-Net dataset id or DatasetXXX_name.")
@click.option("--configuration", default="2d", show_default=True)
@click.option("--fold", default=0, show_default=True, type=int)
@click.option("--trainer", default="nnUNetTrainer", show_default=True,
              help="nnUNetTrainer (baseline), nnUNetTrainerIACSearch or nnUNetTrainerIACRetrain.")
@click.option("--plans", default="nnUNetPlans", show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--epochs", default=0, show_default=True, type=int, help="Baseline only: nnU-Net epochs (0 = nnU-Net's).")
@click.option("--iterations", default=0, show_default=True, type=int, help="Baseline only: iterations per epoch (0 = nnU-Net's).")
@click.option("--val-iterations", default=0, show_default=True, type=int, help="Baseline only (0 = nnU-Net's).")
def train(**o: Any) -> None:
    """Train one fold with an nnU-Net trainer, logged to MLflow."""
    from iac.nnunet.run import dataset_name, nnunet_paths
    from iac.nnunet.run import train as run_train

    setup_logging()
    try:
        name = dataset_name(o["dataset"], nnunet_paths())
    except _user_errors() as e:
        raise click.ClickException(str(e)) from e
    step = {"nnUNetTrainerIACSearch": "search", "nnUNetTrainerIACRetrain": "retrain"}.get(o["trainer"], "retrain")
    tags = {"dataset": name, "backbone": BACKBONE, "nnunet_trainer": o["trainer"], "nnunet_plans": o["plans"],
            "nnunet_configuration": o["configuration"], "fold": o["fold"]}
    with step_run(step, tags) as run:
        tracker = tracker_for(run)
        tracker.log_params({k: v for k, v in o.items()})
        try:
            folder = run_train(o["dataset"], o["configuration"], o["fold"], o["trainer"], o["plans"], o["device"],
                               o["epochs"] or None, o["iterations"] or None, o["val_iterations"] or None,
                               tracker=tracker)
        except _user_errors() as e:
            raise click.ClickException(str(e)) from e
        for artifact in ("genotype.json", "trajectory.json", "progress.png", "validation/summary.json"):
            if (folder / artifact).is_file():
                tracker.log_artifact(folder / artifact)
    echo_done("nnunet train", run, f"output in {folder}")


@nnunet.command("evaluate")
@click.option("--predictions", required=True, help="Folder written by nnUNetv2_predict -o (from the export's imagesTs).")
@click.option("--data", required=True, help="The prepared dataset the nnU-Net dataset was exported from.")
@click.option("--split", default="test", show_default=True)
@click.option("--method", default="nnunet", show_default=True,
              help="What the predictions are, as stats names arms (e.g. nnunet, iac-lth).")
@click.option("--empty-policy", default="dice1_hd0", show_default=True)
def evaluate(**o: Any) -> None:
    """Score nnUNetv2_predict output per patient; writes per_case.csv (read by stats)."""
    import tempfile

    from iac.data.store import PreparedDataset
    from iac.eval.evaluate import structure_tolerances
    from iac.eval.metrics import DEFAULT_NSD_TOLERANCE_MM
    from iac.eval.per_case import save_per_case
    from iac.nnunet.evaluate import evaluate_predictions

    setup_logging()
    prepared_folder("data", o["data"])
    data = PreparedDataset(o["data"])
    try:
        result, restore = evaluate_predictions(data, o["predictions"], o["split"], o["empty_policy"])
    except _user_errors() as e:
        raise click.ClickException(str(e)) from e
    tags = {"dataset": data.name, "backbone": BACKBONE, "split": o["split"], "method": o["method"],
            "eval_data_fingerprint": data.fingerprint, "data_fingerprint": data.fingerprint,
            "empty_policy": o["empty_policy"], "restore": restore}
    with step_run("evaluate", tags) as run:
        tracker = tracker_for(run)
        tracker.log_metrics(result.aggregates)
        meta = {"empty_policy": o["empty_policy"], "restore": restore, "dataset": data.name,
                "nsd_tolerance_mm": structure_tolerances(data, DEFAULT_NSD_TOLERANCE_MM, None),
                "eval_data_fingerprint": data.fingerprint, "data_fingerprint": data.fingerprint,
                "split": o["split"], "model": str(o["predictions"]), "method": o["method"], "backbone": BACKBONE}
        with tempfile.TemporaryDirectory() as tmp:
            csv = save_per_case(result.per_case, Path(tmp) / "per_case.csv", meta)
            tracker.log_artifact(csv)
            if csv.with_suffix(".json").exists():
                tracker.log_artifact(csv.with_suffix(".json"))
    dice = result.aggregates["dice_patient_mean_fg"]
    echo_done("nnunet evaluate", run, f"mean foreground Dice (patient level) {dice:.4f} on {o['split']}")
