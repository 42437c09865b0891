"""Running nnU-Net trainers from the project: checked paths, one clear error per bad input.

``nnUNetv2_train D C F -tr <trainer>`` finds a trainer by walking nnU-Net's
own trainer modules before ``nnUNet_extTrainer``; :func:`train` builds the
trainer class directly instead (what ``nnUNetv2_train`` does once it has found
it) after checking the inputs, so a bad dataset id, a missing folder, a
non-2-D configuration or a fold without a baseline fails with one line
before anything is written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["NNUNetInputError", "NNUNetPaths", "nnunet_paths", "dataset_name", "load_plans", "train", "TRAINERS",
           "trained_folder"]

ENV_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
TRAINERS = ("nnUNetTrainer", "nnUNetTrainerIACSearch", "nnUNetTrainerIACRetrain")


class NNUNetInputError(ValueError):
    """A missing nnU-Net folder, an unknown dataset, a configuration or fold that cannot be used."""


@dataclass(frozen=True)
class NNUNetPaths:
    """nnU-Net's three folders (from its environment variables)."""

    raw: Path
    preprocessed: Path
    results: Path


def nnunet_paths(need: tuple[str, ...] = ENV_VARS) -> NNUNetPaths:
    """nnU-Net's folders from ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results``.

    Raises:
        NNUNetInputError: a variable in ``need`` is unset or names no folder.
    """
    values = {}
    for var in ENV_VARS:
        value = os.environ.get(var, "").strip()
        if var in need:
            if not value:
                raise NNUNetInputError(f"{var} is not set; export {var}=<folder> (nnU-Net's {var[7:]} folder)")
            if var != "nnUNet_results" and not Path(value).is_dir():  # nnU-Net creates its results folder
                raise NNUNetInputError(f"{var}={value} is not a folder; create it or point {var} at nnU-Net's folder")
        values[var] = Path(value) if value else Path()
    return NNUNetPaths(values["nnUNet_raw"], values["nnUNet_preprocessed"], values["nnUNet_results"])


def dataset_name(dataset: str | int, paths: NNUNetPaths) -> str:
    """``Dataset<ID>_<name>`` for an id (``501``) or a full name, looked up in the preprocessed and raw folders.

    Raises:
        NNUNetInputError: no such dataset.
    """
    text = str(dataset).strip()
    if text.startswith("Dataset"):
        candidates = [text]
    elif text.isdigit():
        prefix = f"Dataset{int(text):03d}_"
        candidates = sorted({p.name for root in (paths.preprocessed, paths.raw) if root.is_dir()
                             for p in root.glob(prefix + "*") if p.is_dir()})
    else:
        raise NNUNetInputError(f"dataset {text!r} is neither an nnU-Net dataset id (e.g. 501) nor a DatasetXXX_name")
    for name in candidates:
        if (paths.preprocessed / name).is_dir() or (paths.raw / name).is_dir():
            return name
    raise NNUNetInputError(f"dataset {text} does not exist in {paths.preprocessed} or {paths.raw}")


def load_plans(name: str, plans: str, paths: NNUNetPaths) -> tuple[dict[str, Any], dict[str, Any]]:
    """The plans and dataset.json of a preprocessed dataset.

    Raises:
        NNUNetInputError: not planned and preprocessed yet, or no such plans.
    """
    folder = paths.preprocessed / name
    plans_file, dataset_file = folder / f"{plans}.json", folder / "dataset.json"
    if not plans_file.is_file():
        have = sorted(p.stem for p in folder.glob("*Plans*.json")) if folder.is_dir() else []
        raise NNUNetInputError(f"no plans {plans!r} for {name} ({plans_file} missing; have: {', '.join(have) or 'none'}); "
                               "run nnUNetv2_plan_and_preprocess first")
    if not dataset_file.is_file():
        raise NNUNetInputError(f"{dataset_file} is missing; run nnUNetv2_plan_and_preprocess first")
    return json.loads(plans_file.read_text()), json.loads(dataset_file.read_text())


def check_configuration(plans: dict[str, Any], configuration: str) -> None:
    """The configuration exists and is 2-D (what cells are searched in)."""
    from iac.nnunet.plans import PlansError, _check_2d, _resolved

    try:
        _check_2d(_resolved(plans, configuration), configuration)
    except PlansError as exc:
        raise NNUNetInputError(str(exc)) from exc


def trained_folder(name: str, trainer: str, plans: str, configuration: str, paths: NNUNetPaths) -> Path:
    """``nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>`` (what nnUNetv2_predict's ``-tr -p -c`` name)."""
    return paths.results / name / f"{trainer}__{plans}__{configuration}"


def _trainer_class(trainer: str):
    if trainer == "nnUNetTrainer":
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

        return nnUNetTrainer
    from iac.nnunet import trainers

    return getattr(trainers, trainer)


def train(dataset: str | int, configuration: str, fold: int, trainer: str = "nnUNetTrainer",
          plans: str = "nnUNetPlans", device: str = "cpu", epochs: int | None = None,
          iterations: int | None = None, val_iterations: int | None = None, tracker=None) -> Path:
    """Train one fold with an nnU-Net trainer, as ``nnUNetv2_train`` does; returns the fold's output folder.

    Args:
        dataset: nnU-Net dataset id or name.
        configuration: ``2d`` for the baseline, ``2d_iac`` for the search and retraining.
        fold: the fold of ``splits_final.json``.
        trainer: one of :data:`TRAINERS`.
        plans: plans identifier (``-p``).
        device: ``cpu`` or ``cuda``.
        epochs / iterations / val_iterations: the baseline's nnU-Net epochs and iterations per epoch
            (``nnUNetTrainer`` only; the IAC trainers take theirs from the configuration's ``iac`` block).
        tracker: an :class:`iac.tracking.Tracker` receiving nnU-Net's logged values (losses, pseudo-Dice).

    Raises:
        NNUNetInputError: any input that cannot be used (one line naming it).
    """
    from iac.nnunet.checkpoint import NNUNetCheckpointError
    from iac.nnunet.plans import PlansError

    if trainer not in TRAINERS:
        raise NNUNetInputError(f"trainer {trainer!r} is not one of {', '.join(TRAINERS)}")
    paths = nnunet_paths()
    name = dataset_name(dataset, paths)
    plans_dict, dataset_json = load_plans(name, plans, paths)
    check_configuration(plans_dict, configuration)
    if trainer != "nnUNetTrainer" and (epochs or iterations or val_iterations):
        raise NNUNetInputError(f"{trainer} takes its budget from the configuration's 'iac' block, not from epochs "
                               "or iterations")
    plans_dict["continue_training"] = False
    try:
        if trainer != "nnUNetTrainer":
            from iac.nnunet.plans import iac_block
            from iac.nnunet.trainers import baseline_checkpoint

            baseline_checkpoint(name, iac_block(plans_dict, configuration), fold)  # fails before any folder is made
        obj = _trainer_class(trainer)(plans=plans_dict, configuration=configuration, fold=fold,
                                      dataset_json=dataset_json, device=torch.device(device))
    except (PlansError, NNUNetCheckpointError) as exc:
        raise NNUNetInputError(str(exc)) from exc
    if tracker is not None:
        from iac.nnunet.logger import attach_tracker

        attach_tracker(obj, tracker)
    if epochs:
        obj.num_epochs = int(epochs)
    if iterations:
        obj.num_iterations_per_epoch = int(iterations)
    if val_iterations:
        obj.num_val_iterations_per_epoch = int(val_iterations)
    obj.run_training()
    if trainer != "nnUNetTrainerIACSearch":
        obj.perform_actual_validation(False)
    return Path(obj.output_folder)
