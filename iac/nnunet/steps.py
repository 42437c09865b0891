"""The nnU-Net side of the ``search_full`` / ``search_lth`` / ``retrain`` / ``evaluate`` entry points.

With ``backbone=nnunet`` the entry points run the same trainers as ``iac
nnunet train`` (built directly, as :func:`iac.nnunet.run.train` does; see
the README for why not through ``nnUNetv2_train -tr``). This module holds
what does not touch MLflow:

- :func:`check_inputs`: every user error (nnU-Net folders, dataset id,
  plans, a configuration that is not 2-D, a fold without a trained baseline)
  as one :class:`iac.nnunet.run.NNUNetInputError`, before anything is written;
- :func:`write_search_plans` / :func:`write_retrain_plans`: the ``<conf>_iac``
  configuration in ``<plans>_iac.json`` (the ``iac nnunet plans`` command's file);
- :func:`export_trained`: a trained fold as a state dict plus a JSON
  description (plans, configuration, dataset.json, architecture) — what the
  registry stores as safetensors and JSON instead of the pickled ``.pth``;
- :func:`build_trained` / :func:`predict_cases`: that pair back into a network
  and nnU-Net's predictor (class probabilities written as ``<case>.npz``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from iac.nnunet.checkpoint import NNUNetCheckpointError, read_checkpoint
from iac.nnunet.plans import IACPlanSettings, PlansError, iac_block, write_iac_plans
from iac.nnunet.run import (
    NNUNetInputError,
    NNUNetPaths,
    check_configuration,
    dataset_name,
    load_plans,
    nnunet_paths,
    trained_folder,
)

__all__ = ["NNUNetTarget", "check_inputs", "iac_names", "write_search_plans", "write_retrain_plans",
           "export_trained", "build_trained", "predict_cases", "untie", "registry_dataset", "MODEL_FORMAT",
           "search_result", "final_val_dice"]

# ``format`` of the JSON stored next to the safetensors weights.
MODEL_FORMAT = "iac-nnunet-model/1"
# Plans identifier and configuration of the cells: ``<plans>_iac`` and ``<configuration>_iac``.
IAC_SUFFIX = "_iac"


@dataclass(frozen=True)
class NNUNetTarget:
    """A checked nnU-Net dataset, baseline configuration, fold and plans."""

    name: str  # Dataset<ID>_<name>
    configuration: str  # the 2-D configuration of the trained baseline
    fold: int
    plans: str  # the baseline's plans identifier
    paths: NNUNetPaths
    dataset_json: dict[str, Any]

    @property
    def iac_plans(self) -> str:
        return iac_names(self.plans, self.configuration)[0]

    @property
    def iac_configuration(self) -> str:
        return iac_names(self.plans, self.configuration)[1]

    @property
    def baseline_checkpoint(self) -> Path:
        return (trained_folder(self.name, "nnUNetTrainer", self.plans, self.configuration, self.paths)
                / f"fold_{self.fold}" / "checkpoint_final.pth")

    def tags(self) -> dict[str, str]:
        """Version and run tags naming where the network and data are in nnU-Net's folders."""
        return {"nnunet_dataset": self.name, "nnunet_plans": self.plans,
                "nnunet_configuration": self.configuration, "nnunet_fold": str(self.fold),
                "nnunet_iac_plans": self.iac_plans, "nnunet_iac_configuration": self.iac_configuration}


def iac_names(plans: str, configuration: str) -> tuple[str, str]:
    """The plans identifier and configuration with cells built on ``plans`` / ``configuration``."""
    return plans + IAC_SUFFIX, configuration + IAC_SUFFIX


def registry_dataset(target: NNUNetTarget) -> str:
    """``<dataset>`` of the registry names: the prepared dataset's name of an export, else the name after ``DatasetXXX_``."""
    prepared = target.dataset_json.get("iac", {}).get("prepared_name")
    return str(prepared) if prepared else target.name.split("_", 1)[-1]


def check_inputs(dataset: str, configuration: str = "2d", fold: int = 0, plans: str = "nnUNetPlans") -> NNUNetTarget:
    """Check every nnU-Net input of a search or retraining; nothing is written.

    Raises:
        NNUNetInputError: a missing nnU-Net folder, an unknown dataset, missing plans, a configuration
            that is not 2-D, or a fold without ``checkpoint_final.pth`` of ``nnUNetTrainer``.
    """
    if not str(dataset).strip():
        raise NNUNetInputError("nnunet_dataset is empty; give the nnU-Net dataset id (e.g. 501) with backbone=nnunet")
    paths = nnunet_paths()
    name = dataset_name(dataset, paths)
    plans_dict, dataset_json = load_plans(name, plans, paths)
    check_configuration(plans_dict, configuration)
    target = NNUNetTarget(name, configuration, int(fold), plans, paths, dataset_json)
    if not target.baseline_checkpoint.is_file():
        raise NNUNetInputError(
            f"fold {fold} has no trained baseline: {target.baseline_checkpoint} is missing; train it first with "
            f"`nnUNetv2_train {name} {configuration} {fold} -p {plans}`"
        )
    return target


def write_search_plans(target: NNUNetTarget, settings: IACPlanSettings) -> Path:
    """``<plans>_iac.json`` with the ``<conf>_iac`` configuration (plain skips, the search settings)."""
    folder = target.paths.preprocessed / target.name
    try:
        return write_iac_plans(folder / f"{target.plans}.json", folder / f"{target.iac_plans}.json", settings, None,
                               target.configuration, target.iac_configuration)
    except PlansError as exc:
        raise NNUNetInputError(str(exc)) from exc


def write_retrain_plans(target: NNUNetTarget, genotype_json: str, retrain_epochs: int | None = None,
                        budget: Mapping[str, int] | None = None) -> tuple[Path, IACPlanSettings]:
    """``<plans>_iac.json`` with the genotype in ``<conf>_iac``; keeps the ``iac`` settings already there.

    Args:
        target: the checked dataset, configuration, fold and plans.
        genotype_json: the cell (raises :class:`iac.nas.genotype.GenotypeError` when it is none of the project's).
        retrain_epochs: the retraining budget in paper epochs (None = the settings').
        budget: ``iterations_per_epoch`` / ``val_iterations_per_epoch`` / ``max_nnunet_epochs`` to override.
    """
    from dataclasses import replace

    from iac.nnunet.network import parse_genotype

    genotype = parse_genotype(genotype_json)  # GenotypeError before anything is written
    if genotype is None:
        raise NNUNetInputError("no genotype given; retrain with backbone=nnunet needs skip=iac and a genotype")
    genotype.validate()
    folder = target.paths.preprocessed / target.name
    out = folder / f"{target.iac_plans}.json"
    settings = IACPlanSettings(baseline_plans=target.plans, baseline_configuration=target.configuration)
    if out.is_file():
        existing = json.loads(out.read_text())
        if target.iac_configuration in existing.get("configurations", {}):
            settings = iac_block(existing, target.iac_configuration)  # the search's settings
    changes: dict[str, Any] = {k: int(v) for k, v in (budget or {}).items() if v is not None}
    if retrain_epochs is not None:
        changes["retrain_epochs"] = int(retrain_epochs)
    settings = replace(settings, **changes)
    try:
        path = write_iac_plans(folder / f"{target.plans}.json", out, settings, genotype, target.configuration,
                               target.iac_configuration)
    except PlansError as exc:
        raise NNUNetInputError(str(exc)) from exc
    return path, settings


def search_result(output_folder: Path) -> dict[str, Any]:
    """The genotype JSON and summary of a finished search trainer's output folder."""
    from iac.nnunet.trainers import GENOTYPE_FILE, TRAJECTORY_FILE

    trajectory = json.loads((output_folder / TRAJECTORY_FILE).read_text())
    epochs = trajectory["epochs"]
    return {
        "genotype_json": (output_folder / GENOTYPE_FILE).read_text(),
        "trajectory": trajectory,
        "search_seconds": float(epochs[-1]["cum_seconds"]) if epochs else 0.0,
        "epochs_run": len(epochs),
        "stopped_early": bool(trajectory.get("stopped_early")),
        "pruning_events": len(trajectory.get("events", [])),
        "final_val_dice": float(epochs[-1]["val_dice"]) if epochs else float("nan"),
    }


def final_val_dice(output_folder: Path) -> float | None:
    """nnU-Net's final validation: mean foreground Dice of ``validation/summary.json`` (None without it)."""
    summary = output_folder / "validation" / "summary.json"
    if not summary.is_file():
        return None
    value = json.loads(summary.read_text()).get("foreground_mean", {}).get("Dice")
    return None if value is None else float(value)


def untie(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """One copy of every tensor that several names share, and the names that alias it.

    nnU-Net's state dicts name one tensor several times (``decoder.encoder.*``
    is the encoder; ``convs.N.all_modules.0`` is ``convs.N.conv``); safetensors
    stores each tensor once. Returns the unique tensors (CPU copies) and
    ``alias -> kept name`` (the shortest name is kept).
    """
    kept: dict[tuple, str] = {}
    unique: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    for name in sorted(state, key=lambda k: (len(k), k)):
        t = state[name]
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if t.numel() and key in kept:
            tied[name] = kept[key]
            continue
        kept[key] = name
        unique[name] = t.detach().cpu().clone().contiguous()  # a copy: no two stored tensors share memory
    return unique, tied


def export_trained(output_folder: Path, target: NNUNetTarget) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A trained fold's weights (``checkpoint_final.pth``, read with ``weights_only``) and its JSON description.

    The JSON holds everything :func:`build_trained` and nnU-Net's predictor need:
    the plans (with the genotype in the architecture), the configuration name,
    ``dataset.json``, the trainer that rebuilds the network and the mirroring axes.
    """
    ckpt = read_checkpoint(output_folder / "checkpoint_final.pth")
    state, tied = untie({k[len("module."):] if k.startswith("module.") else k: v
                         for k, v in ckpt["network_weights"].items()})
    init = ckpt.get("init_args", {})
    axes = ckpt.get("inference_allowed_mirroring_axes")
    config = {
        "format": MODEL_FORMAT,
        "plans": init.get("plans"),
        "configuration": init.get("configuration", target.iac_configuration),
        "dataset_json": init.get("dataset_json", target.dataset_json),
        "trainer_name": ckpt.get("trainer_name", "nnUNetTrainer"),
        "inference_allowed_mirroring_axes": list(axes) if axes is not None else None,
        "nnunet_dataset": target.name,
        "fold": target.fold,
        "tied": tied,
    }
    if not isinstance(config["plans"], dict):
        raise NNUNetCheckpointError(f"{output_folder / 'checkpoint_final.pth'} carries no plans (init_args)")
    return state, config


def _managers(config: Mapping[str, Any]):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(dict(config["plans"]))
    return plans_manager, plans_manager.get_configuration(config["configuration"])


def build_trained(config: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """The network of :func:`export_trained`'s JSON with its weights (``strict``; no deep supervision), in eval mode."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    if config.get("format") != MODEL_FORMAT:
        raise NNUNetCheckpointError(f"not an nnU-Net model of this project (format {config.get('format')!r}, "
                                    f"expected {MODEL_FORMAT!r})")
    plans_manager, conf = _managers(config)
    dataset_json = dict(config["dataset_json"])
    n_in = determine_num_input_channels(plans_manager, conf, dataset_json)
    n_out = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    net = get_network_from_plans(conf.network_arch_class_name, conf.network_arch_init_kwargs,
                                 conf.network_arch_init_kwargs_req_import, n_in, n_out, allow_init=False,
                                 deep_supervision=False)
    full = dict(state)
    full.update({alias: full[kept] for alias, kept in config.get("tied", {}).items()})
    net.load_state_dict(full, strict=True)
    return net.eval()


def predict_cases(config: Mapping[str, Any], network: torch.nn.Module, images: list[list[str]],
                  case_ids: list[str], out_folder: Path, device: str = "cpu", save_probabilities: bool = True) -> Path:
    """nnU-Net's predictor on raw images (one list of channel files per case): ``<case>.nii.gz`` label maps and,
    with ``save_probabilities``, ``<case>.npz`` class probabilities.

    Sliding window with nnU-Net's defaults, no test-time mirroring (as the
    pipeline test's ``nnUNetv2_predict --disable_tta``), in this process.
    """
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    plans_manager, conf = _managers(config)
    predictor = nnUNetPredictor(use_mirroring=False, perform_everything_on_device=device != "cpu",
                                device=torch.device(device), allow_tqdm=False)
    predictor.manual_initialization(network, plans_manager, conf, [network.state_dict()],
                                    dict(config["dataset_json"]), config.get("trainer_name", "nnUNetTrainer"),
                                    None)
    out_folder.mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files_sequential(images, [str(out_folder / c) for c in case_ids], save_probabilities=save_probabilities,
                                            overwrite=True)
    return out_folder
