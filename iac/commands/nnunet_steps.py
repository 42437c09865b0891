"""``search_full`` / ``search_lth`` / ``retrain`` / ``evaluate`` with ``backbone=nnunet``.

The entry points hand over here when ``backbone`` is ``nnunet`` (or, for
``evaluate``, when the model is a registered nnU-Net network). Each step runs
the nnU-Net trainers of :mod:`iac.nnunet.trainers` in its MLflow run (nnU-Net's
logged values reach the run through :class:`iac.nnunet.logger.TrackerLogger`)
and registers what the project's backbones register:

- a search: ``iac-cell-<dataset>-nnunet`` (tags as every cell, plus
  ``nnunet_dataset``, ``nnunet_plans``, ``nnunet_configuration``, ``nnunet_fold``);
- a retraining: ``iac-unet-<dataset>-nnunet``, weights as safetensors plus a
  JSON of plans and architecture (:func:`iac.registry.register_nnunet`);
- an evaluation: nnU-Net's predictor on the exported raw images of the split,
  scored into the same ``per_case.csv`` as every other model.

Every user error is checked before the run starts (nothing written) and
raised as ``ValueError``, which the commands print as one line.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import click

from iac.commands.common import echo_done, optional, step_run, tracker_for
from iac.commands.store import open_store

BACKBONE = "nnunet"
# The nnU-Net options of the entry points ("" = the default given here).
NNUNET_DEFAULTS = {"nnunet_configuration": "2d", "nnunet_fold": "0", "nnunet_plans": "nnUNetPlans"}
# nnU-Net budget options: "" keeps nnU-Net's 250 / 50 iterations and no epoch cap.
BUDGET_OPTIONS = {"nnunet_iterations": "iterations_per_epoch", "nnunet_val_iterations": "val_iterations_per_epoch",
                  "nnunet_max_epochs": "max_nnunet_epochs"}


def nnunet_options(fn, budget: bool = True):
    """The nnU-Net options of an entry point (all empty by default: the project's backbones ignore them)."""
    opts = [
        click.option("--nnunet-dataset", default="", help="backbone=nnunet: nnU-Net dataset id or DatasetXXX_name."),
        click.option("--nnunet-configuration", default="", help="backbone=nnunet: the trained 2-D configuration (empty = 2d)."),
        click.option("--nnunet-fold", default="", help="backbone=nnunet: fold of the trained baseline (empty = 0)."),
        click.option("--nnunet-plans", default="", help="backbone=nnunet: plans identifier of the baseline (empty = nnUNetPlans)."),
    ]
    if budget:
        opts += [
            click.option("--nnunet-iterations", default="", help="backbone=nnunet: iterations per nnU-Net epoch (empty = 250)."),
            click.option("--nnunet-val-iterations", default="", help="backbone=nnunet: validation iterations per epoch (empty = 50)."),
            click.option("--nnunet-max-epochs", default="", help="backbone=nnunet: cap on the mapped nnU-Net epochs (empty = none)."),
        ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _int(o: dict[str, Any], key: str) -> int | None:
    text = optional(o.get(key, ""))
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise click.BadParameter(f"expected an integer or empty, got {text!r}",
                                 param_hint=f"--{key.replace('_', '-')}") from None


def nnunet_values(o: dict[str, Any]) -> dict[str, Any]:
    """The nnU-Net options with their defaults filled in; ``nnunet_*`` without ``backbone=nnunet`` is a usage error."""
    given = [k for k in (*NNUNET_DEFAULTS, "nnunet_dataset", *BUDGET_OPTIONS) if optional(o.get(k, ""))]
    if o.get("backbone") != BACKBONE:
        if given:
            raise click.BadParameter(f"--{given[0].replace('_', '-')} is only used with --backbone nnunet",
                                     param_hint=f"--{given[0].replace('_', '-')}")
        return {}
    if not optional(o.get("nnunet_dataset", "")):
        raise click.BadParameter("backbone=nnunet needs the nnU-Net dataset id (e.g. 501)", param_hint="--nnunet-dataset")
    values = {k: optional(o.get(k, "")) or d for k, d in NNUNET_DEFAULTS.items()}
    values["nnunet_dataset"] = optional(o["nnunet_dataset"])
    values["nnunet_fold"] = _int(values, "nnunet_fold")
    values["budget"] = {field: _int(o, key) for key, field in BUDGET_OPTIONS.items()}
    return values


def _target(v: dict[str, Any]):
    from iac.nnunet.steps import check_inputs

    return check_inputs(v["nnunet_dataset"], v["nnunet_configuration"], v["nnunet_fold"], v["nnunet_plans"])


def _device(name: str) -> str:
    from iac.train.device import resolve_device

    return resolve_device(name).type


def _fingerprint(target) -> str:
    return str(target.dataset_json.get("iac", {}).get("data_fingerprint", ""))


def run_nnunet_search(cfg, method: str, stability, v: dict[str, Any]) -> dict[str, Any]:
    """A search in a trained 2-D nnU-Net (``method`` full or lth) in its own run; registers the cell.

    Args:
        cfg: the :class:`iac.config.SearchConfig` of the options (search-space and optimiser settings,
            ``epochs`` / ``warmup_epochs`` in paper epochs, ``seed``, ``device``).
        method: ``full`` or ``lth``.
        stability: the :class:`iac.config.StabilityConfig` (``lth``).
        v: :func:`nnunet_values`.
    """
    from dataclasses import replace

    from iac import registry
    from iac.commands.search import cell_diagram
    from iac.config import StabilityConfig
    from iac.nas.genotype import Genotype
    from iac.nnunet.plans import IACPlanSettings
    from iac.nnunet.run import train
    from iac.nnunet.steps import registry_dataset, search_result, write_search_plans

    open_store()
    target = _target(v)  # every input checked before anything is written
    budget = {k: x for k, x in v["budget"].items() if x is not None}
    settings = IACPlanSettings(method=method, search=replace(cfg, resume=None), stability=stability or StabilityConfig(),
                               baseline_plans=target.plans, baseline_configuration=target.configuration, **budget)
    device = _device(cfg.device)
    dataset = registry_dataset(target)
    fingerprint = _fingerprint(target)
    tags = {"dataset": dataset, "backbone": BACKBONE, "method": method, "seed": cfg.seed,
            "data_fingerprint": fingerprint or None, **target.tags()}
    write_search_plans(target, settings)
    with step_run(f"search_{method}", tags, run_name=f"search-{method}-nnunet-s{cfg.seed}", system_metrics=True) as run:
        tracker = tracker_for(run)
        tracker.log_params({"method": method, "backbone": BACKBONE, "device": device, **target.tags(),
                            **{f"iac/{k}": json.dumps(x) if isinstance(x, (dict, list)) else x
                               for k, x in settings.to_dict().items()}})
        folder = train(target.name, target.iac_configuration, target.fold, "nnUNetTrainerIACSearch",
                       target.iac_plans, device, tracker=tracker)
        result = search_result(folder)
        for name in ("genotype.json", "trajectory.json"):
            tracker.log_artifact(folder / name, "genotype" if name == "genotype.json" else None)
        tracker.log_metrics({k: float(result[k]) for k in ("search_seconds", "epochs_run", "stopped_early",
                                                            "pruning_events", "final_val_dice")})
        genotype = Genotype.from_json(result["genotype_json"])
        with tempfile.TemporaryDirectory() as tmp:
            diagram = cell_diagram(genotype, Path(tmp), f"{method} search in nnU-Net, seed {cfg.seed}", tracker)
            mv = registry.register_genotype(
                run.info.run_id, genotype.to_json(), registry.cell_model_name(dataset, BACKBONE),
                {"method": method, "search_seconds": f"{result['search_seconds']:.3f}",
                 "epochs_run": result["epochs_run"], "seed": cfg.seed, "data_fingerprint": fingerprint,
                 "pretrained": str(target.baseline_checkpoint), "search_run": run.info.run_id,
                 "pruning_events": result["pruning_events"], "backbone": BACKBONE, "dataset": dataset,
                 **target.tags()},
                diagram=diagram,
            )
        outputs = {"run_id": run.info.run_id, "cell_uri": mv.uri, "search_seconds": result["search_seconds"],
                   "epochs_run": result["epochs_run"], "genotype": str(genotype), "output_folder": str(folder)}
        tracker.set_tags({"genotype": str(genotype), "cell_uri": mv.uri, "pretrained": str(target.baseline_checkpoint),
                          "iac_outputs": json.dumps(outputs)})
    echo_done(f"search_{method}", run, f"{result['epochs_run']} nnU-Net epochs in {result['search_seconds']:.1f} s; "
                                       f"cell {mv.uri}: {genotype}")
    return outputs


def run_nnunet_retrain(o: dict[str, Any], v: dict[str, Any]) -> dict[str, Any]:
    """Retrain the fold's 2-D nnU-Net with a cell (``skip=iac``) in its own run; registers the network."""
    from iac import registry
    from iac.nnunet.run import train
    from iac.nnunet.steps import export_trained, final_val_dice, registry_dataset, write_retrain_plans

    open_store()
    if o["skip"] != "iac":
        raise click.BadParameter(f"backbone=nnunet retrains with a cell: use skip=iac (the plain baseline is "
                                 f"`nnUNetv2_train`), got {o['skip']!r}", param_hint="--skip")
    if not optional(o["genotype"]):
        raise click.BadParameter("skip=iac needs a genotype (models:/iac-cell-...-nnunet/N, runs:/ or a file)",
                                 param_hint="--genotype")
    target = _target(v)
    genotype_json, cell_tags = registry.load_genotype_json(o["genotype"])
    genotype_uri = registry.resolve(o["genotype"]).uri if o["genotype"].startswith("models:/") else o["genotype"]
    device = _device(o["device"])
    dataset = registry_dataset(target)
    fingerprint = _fingerprint(target)
    tags = {"dataset": dataset, "backbone": BACKBONE, "skip": "iac", "seed": o["seed"],
            "data_fingerprint": fingerprint or None, "pretrained": str(target.baseline_checkpoint),
            "genotype": genotype_uri, "cell_method": cell_tags.get("method"), **target.tags()}
    _, settings = write_retrain_plans(target, genotype_json, o["epochs"], v["budget"])  # GenotypeError: one line
    with step_run("retrain", tags, run_name="retrain-iac-nnunet", system_metrics=True) as run:
        tracker = tracker_for(run)
        tracker.log_params({"skip": "iac", "genotype": genotype_uri, "epochs": o["epochs"], "device": device,
                            "backbone": BACKBONE, **target.tags(),
                            **{f"iac/{k}": settings.to_dict()[k] for k in ("retrain_epochs", "iterations_per_epoch",
                                                                          "val_iterations_per_epoch",
                                                                          "max_nnunet_epochs")}})
        folder = train(target.name, target.iac_configuration, target.fold, "nnUNetTrainerIACRetrain",
                       target.iac_plans, device, tracker=tracker)
        val = final_val_dice(folder)
        if val is not None:
            tracker.log_metrics({"val_dice": val})
        if (folder / "validation" / "summary.json").is_file():
            tracker.log_artifact(folder / "validation" / "summary.json", "validation")
        state, config = export_trained(folder, target)
        model_tags = {"skip": "iac", "seed": o["seed"], "val_dice": f"{val:.6f}" if val is not None else "nan",
                      "data_fingerprint": fingerprint, "pretrained": str(target.baseline_checkpoint),
                      "backbone": BACKBONE, "dataset": dataset, "epochs": o["epochs"], "train_run": run.info.run_id,
                      "genotype": genotype_uri, "cell_method": cell_tags.get("method", "file"), **target.tags()}
        name = registry.unet_model_name(dataset, BACKBONE)
        mv = registry.register_nnunet(run.info.run_id, state, config, name, model_tags)
        if fingerprint:
            registry.update_champion(name, fingerprint)
        outputs = {"run_id": run.info.run_id, "model_uri": mv.uri, "val_dice": val, "output_folder": str(folder)}
        tracker.set_tags({"iac_outputs": json.dumps(outputs)})
    echo_done("retrain", run, f"registered {mv.uri}" + (f" (nnU-Net validation Dice {val:.4f})" if val is not None else ""))
    return outputs


def is_nnunet_model(uri: str) -> bool:
    """True for a registered version tagged ``backbone=nnunet``."""
    from iac import registry

    if not uri.startswith("models:/"):
        return False
    open_store()
    return registry.resolve(uri).tags.get("backbone") == BACKBONE


def _split_images(raw_folder: Path, dataset_json: dict[str, Any], case_ids: list[str]) -> list[list[str]]:
    """Each case's channel files in the export (``imagesTs`` for test patients, else ``imagesTr``)."""
    from iac.nnunet.run import NNUNetInputError

    ending = dataset_json.get("file_ending", ".nii.gz")
    n_channels = len(dataset_json.get("channel_names", {"0": ""}))
    images = []
    for case in case_ids:
        for sub in ("imagesTs", "imagesTr"):
            files = [raw_folder / sub / f"{case}_{c:04d}{ending}" for c in range(n_channels)]
            if all(f.is_file() for f in files):
                images.append([str(f) for f in files])
                break
        else:
            raise NNUNetInputError(f"case {case} is not in {raw_folder}/imagesTs or imagesTr: was the nnU-Net dataset "
                                   "exported from this prepared folder (`iac nnunet export`)?")
    return images


def run_nnunet_evaluate(cfg, nnunet_dataset: str | None = None) -> dict[str, Any]:
    """Evaluate a registered nnU-Net network on a split of the prepared data it was exported from.

    nnU-Net's predictor runs on the exported raw images of the split's cases;
    the predictions are scored and saved exactly as ``evaluate`` does for the
    project's networks (``per_case.csv`` with its sidecar), so ``stats`` pairs them.
    """
    from iac import registry
    from iac.commands.evaluate import _log_per_case, _run_tags
    from iac.data.store import PreparedDataset
    from iac.eval.evaluate import structure_tolerances
    from iac.nnunet.evaluate import evaluate_predictions
    from iac.nnunet.run import dataset_name, nnunet_paths
    from iac.nnunet.steps import build_trained, predict_cases

    open_store()
    data = PreparedDataset(cfg.data)
    state, config, mtags = registry.load_nnunet_files(cfg.model)
    paths = nnunet_paths(("nnUNet_raw",))
    name = dataset_name(nnunet_dataset or mtags.get("nnunet_dataset") or config["nnunet_dataset"], paths)
    cases = [c.case_id for c in data.cases(cfg.split)]
    if not cases:
        raise ValueError(f"split {cfg.split!r} of {data.root} has no cases")
    images = _split_images(paths.raw / name, config["dataset_json"], cases)
    net = build_trained(config, state)
    trained_fp = mtags.get("data_fingerprint") or None
    if trained_fp and trained_fp != data.fingerprint:
        click.echo(f"warning: {cfg.model} was trained on prepared data {trained_fp[:8]}, evaluating on "
                   f"{data.fingerprint[:8]}", err=True)
    tags = _run_tags(cfg, data, {}, mtags, trained_fp, {"nnunet_dataset": name})
    tolerance = structure_tolerances(data, cfg.nsd_tolerance_mm, dict(cfg.nsd_class_tolerance_mm))
    device = _device(cfg.device)
    with step_run("evaluate", tags, run_name=f"evaluate-{cfg.split}-nnunet", system_metrics=True) as run:
        tracker = tracker_for(run)
        from iac.config import to_dict

        tracker.log_params(to_dict(cfg))
        with tempfile.TemporaryDirectory() as tmp:
            pred = predict_cases(config, net, images, cases, Path(tmp) / "predictions", device,
                                 save_probabilities=cfg.restore == "probabilities")
            result, restore = evaluate_predictions(data, pred, cfg.split, cfg.empty_policy, cfg.nsd_tolerance_mm,
                                                   dict(cfg.nsd_class_tolerance_mm))
            tracker.set_tags({"restore": restore})
            _log_per_case(result.per_case, Path(tmp), cfg, data, tags, tolerance, tracker)
        tracker.log_metrics({**result.aggregates, "seconds_per_case": result.seconds_per_case})
        dice = result.aggregates["dice_patient_mean_fg"]
        if cfg.split == "val" and mtags.get("genotype", "").startswith("models:/"):
            registry.record_validation(mtags["genotype"], dice, cfg.model, data.fingerprint)
        outputs = {"run_id": run.info.run_id, "dice": dice, "nsd": result.aggregates["nsd_patient_mean_fg"],
                   "split": cfg.split, "method": tags["method"]}
        tracker.set_tags({"iac_outputs": json.dumps(outputs)})
    echo_done("evaluate", run, f"mean foreground Dice (patient level) {dice:.4f} on {cfg.split}")
    return outputs
