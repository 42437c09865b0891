"""nnU-Net trainers that search and retrain implantable cells (found through ``-tr``).

Both run on a configuration written by ``iac nnunet-plans`` (``2d_iac``), whose
``iac`` block names the trained 2-D baseline and the settings
(:class:`iac.nnunet.plans.IACPlanSettings`). nnU-Net finds them when
``nnUNet_extTrainer`` points at ``iac/nnunet/ext`` (see the README):

- :class:`nnUNetTrainerIACSearch` loads the baseline's ``checkpoint_final.pth``
  of the same fold, freezes it in eval mode, implants a searchable cell in
  every skip (:class:`iac.nas.supernet.SearchNetwork`), splits the fold's
  training cases by patient into a weight half and an architecture half
  (:func:`iac.data.splits.split_search_halves`), and runs the project's search
  epoch (:func:`iac.nas.search.search_epoch`: weight step, architecture step,
  checks and the pruning policy) on nnU-Net's data loaders and loss. Each
  epoch ends with nnU-Net's pseudo-Dice validation; the search stops early
  once IAC-LTH has decided every edge. It writes ``genotype.json`` and
  ``trajectory.json`` to its output folder. Its checkpoints are the project's
  search checkpoints (a pruned supernet is no network nnU-Net can rebuild).
  ``torch.compile`` is never used: pruning changes the supernet.
- :class:`nnUNetTrainerIACRetrain` builds the network with the discrete cell
  from the plans (the genotype in the architecture block), loads the
  baseline's weights into it itself (nnU-Net's ``-pretrained_weights`` asserts
  every key of the new network exists in the checkpoint, which the cells'
  keys do not), and trains it with nnU-Net's own loop, deep supervision
  included. ``nnUNetv2_predict -tr nnUNetTrainerIACRetrain -c 2d_iac`` predicts with it.

Budgets follow :mod:`iac.nnunet.budget`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from nnunetv2.paths import nnUNet_results
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from iac.atomic import atomic_write_text
from iac.nnunet.budget import nnunet_epochs
from iac.nnunet.checkpoint import NNUNetCheckpointError, load_baseline
from iac.nnunet.plans import IACPlanSettings, iac_block

__all__ = ["nnUNetTrainerIACSearch", "nnUNetTrainerIACRetrain", "baseline_checkpoint", "case_patients",
           "NNUNetPairedBatches"]

GENOTYPE_FILE = "genotype.json"
TRAJECTORY_FILE = "trajectory.json"


def baseline_checkpoint(dataset_name: str, settings: IACPlanSettings, fold: int | str) -> Path:
    """``nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>/fold_<F>/checkpoint_final.pth``.

    Raises:
        NNUNetCheckpointError: ``nnUNet_results`` unset or the fold has no trained checkpoint.
    """
    if not nnUNet_results.is_set():
        raise NNUNetCheckpointError("nnUNet_results is not set; point it at nnU-Net's results folder")
    folder = (Path(nnUNet_results.get()) / dataset_name /
              f"{settings.baseline_trainer}__{settings.baseline_plans}__{settings.baseline_configuration}" / f"fold_{fold}")
    path = folder / "checkpoint_final.pth"
    if not path.is_file():
        raise NNUNetCheckpointError(
            f"fold {fold} has no trained baseline: {path} is missing; train it first with "
            f"`nnUNetv2_train {dataset_name} {settings.baseline_configuration} {fold} -p {settings.baseline_plans}`"
        )
    return path


def case_patients(dataset_json: dict[str, Any], cases: list[str]) -> dict[str, str]:
    """Case id -> patient id, from the ``iac`` block an export writes (each case its own patient otherwise)."""
    known = dataset_json.get("iac", {}).get("patients", {})
    return {c: str(known.get(c, c)) for c in cases}


def _build(configuration_manager, num_input_channels: int, num_output_channels: int, deep_supervision: bool,
           genotype: Any) -> torch.nn.Module:
    kwargs = dict(configuration_manager.network_arch_init_kwargs)
    kwargs["genotype"] = genotype
    return get_network_from_plans(configuration_manager.network_arch_class_name, kwargs,
                                  configuration_manager.network_arch_init_kwargs_req_import,
                                  num_input_channels, num_output_channels, allow_init=True,
                                  deep_supervision=deep_supervision)


def _n_slices(dataset, keys: list[str]) -> int:
    """2-D slices of ``keys`` (the first spatial axis of the preprocessed volumes)."""
    return int(sum(dataset.load_case(k)[0].shape[1] for k in keys))


class NNUNetPairedBatches:
    """``iterations`` pairs of nnU-Net batches per epoch, as the search loop's ``{"image", "label"}`` dicts.

    The weight batch comes from the weight half's loader, the architecture
    batch from the architecture half's (nnU-Net's loaders sample endlessly).
    """

    def __init__(self, weight_loader, arch_loader, iterations: int) -> None:
        self.weight_loader, self.arch_loader, self.iterations = weight_loader, arch_loader, iterations

    def __len__(self) -> int:
        return self.iterations

    @staticmethod
    def _batch(batch: dict[str, Any]) -> dict[str, Any]:
        return {"image": batch["data"], "label": batch["target"]}  # (B, C, H, W), (B, 1, H, W)

    def __iter__(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        for _ in range(self.iterations):
            yield self._batch(next(self.weight_loader)), self._batch(next(self.arch_loader))

    def state_dict(self) -> dict[str, Any]:
        """nnU-Net's loaders keep no resumable position."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore (see :meth:`state_dict`)."""


class _IACTrainerBase(nnUNetTrainer):
    """Reads the configuration's ``iac`` block; never compiles."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.iac = iac_block(self.plans_manager.plans, configuration)
        self.num_iterations_per_epoch = self.iac.iterations_per_epoch
        self.num_val_iterations_per_epoch = self.iac.val_iterations_per_epoch

    def _do_i_compile(self) -> bool:
        return False

    def _load_baseline(self, network: torch.nn.Module) -> Path:
        path = baseline_checkpoint(self.plans_manager.dataset_name, self.iac, self.fold)
        load_baseline(network, path)
        self.print_to_log_file(f"baseline weights loaded from {path}")
        return path

    def _fold_slices(self, keys: list[str]) -> int:
        return _n_slices(self.dataset_class(self.preprocessed_dataset_folder, keys), keys)


class nnUNetTrainerIACRetrain(_IACTrainerBase):
    """Retrains the 2-D nnU-Net with the discrete cell of the plans' genotype, starting from the baseline.

    The network is what nnU-Net's own ``build_network_architecture`` builds
    from the configuration (the network class with cells and its genotype), so
    its checkpoints name ``nnUNetTrainer`` as the trainer that rebuilds it:
    ``nnUNetv2_predict`` then needs no trainer lookup beyond nnU-Net's own.
    """

    # The trainer whose build_network_architecture rebuilds this network (written into checkpoints).
    network_builder = "nnUNetTrainer"

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if not self.configuration_manager.network_arch_init_kwargs.get("genotype"):
            raise NNUNetCheckpointError(
                f"configuration {configuration!r} carries no genotype; write it with "
                "`iac nnunet plans --genotype <genotype.json>`"
            )

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint layout, with :attr:`network_builder` as the trainer name."""
        if self.local_rank != 0 or self.disable_checkpointing:
            return
        net = self.network.module if self.is_ddp else self.network
        net = getattr(net, "_orig_mod", net)
        torch.save({
            "network_weights": net.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "logging": self.logger.get_checkpoint(),
            "_best_ema": self._best_ema,
            "current_epoch": self.current_epoch + 1,
            "init_args": self.my_init_kwargs,
            "trainer_name": self.network_builder,
            "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
        }, filename)

    def initialize(self) -> None:
        super().initialize()
        self._load_baseline(self.network)

    def on_train_start(self) -> None:
        if not self.was_initialized:
            self.initialize()
        tr_keys, _ = self.do_split()
        slices = self._fold_slices(tr_keys)
        self.num_epochs = nnunet_epochs(self.iac.retrain_epochs, slices, self.configuration_manager.batch_size,
                                        self.num_iterations_per_epoch, self.iac.max_nnunet_epochs)
        self.optimizer, self.lr_scheduler = self.configure_optimizers()  # the poly schedule over the mapped epochs
        self.print_to_log_file(f"retrain: {self.iac.retrain_epochs} paper epochs over {slices} slices = "
                               f"{self.num_epochs} nnU-Net epochs of {self.num_iterations_per_epoch} iterations")
        super().on_train_start()


class nnUNetTrainerIACSearch(_IACTrainerBase):
    """Searches a cell in the skips of the fold's trained 2-D baseline (the project's search loop)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False  # the search scores the full-resolution output, as the project's
        self._half: set[str] | None = None
        self.search_state = None
        self.search_seconds = 0.0

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> torch.nn.Module:
        """The plans' network with the plain skips (the baseline); the supernet wraps it."""
        return _build(configuration_manager, num_input_channels, num_output_channels, enable_deep_supervision, None)

    # data --------------------------------------------------------------------------------------------
    def do_split(self):
        tr_keys, val_keys = super().do_split()
        if self._half is not None:
            patients = case_patients(self.dataset_json, tr_keys)
            tr_keys = [k for k in tr_keys if patients[k] in self._half]
        return tr_keys, val_keys

    def _halves(self) -> tuple[list[str], list[str]]:
        from iac.data.splits import split_search_halves

        saved, self._half = self._half, None
        tr_keys, _ = self.do_split()
        self._half = saved
        patients = case_patients(self.dataset_json, tr_keys)
        return split_search_halves(sorted(set(patients.values())), self.iac.search.seed)

    def get_dataloaders(self):
        w_patients, a_patients = self._halves()
        self._half = set(w_patients)
        weight_loader, val_loader = super().get_dataloaders()
        self._half = set(a_patients)
        arch_loader, _ = super().get_dataloaders()
        self._half = None
        self._arch_loader = arch_loader
        self._split = {"weight": w_patients, "arch": a_patients}
        return weight_loader, val_loader

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        net = self.network.unet if hasattr(self.network, "unet") else self.network
        net.decoder.deep_supervision = enabled

    # the search --------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        from iac.nnunet.search_state import NNUNetSearchState

        if not self.was_initialized:
            self.initialize()
        baseline = self._load_baseline(self.network)
        super().on_train_start()  # loaders (the two halves and validation), plans copies, debug files
        self._half = set(self._split["weight"])
        w_keys, _ = self.do_split()
        self._half = None
        slices = self._fold_slices(w_keys)
        batch = self.configuration_manager.batch_size
        cfg = self.iac.search
        epochs = nnunet_epochs(cfg.epochs, slices, batch, self.num_iterations_per_epoch, self.iac.max_nnunet_epochs)
        warmup = nnunet_epochs(cfg.warmup_epochs, slices, batch, self.num_iterations_per_epoch, minimum=0)
        self.num_epochs = epochs
        self.search_state = NNUNetSearchState(
            self.iac, self.network, NNUNetPairedBatches(self.dataloader_train, self._arch_loader,
                                                        self.num_iterations_per_epoch),
            self.loss, self.device, epochs, min(warmup, epochs // 2), self._split, str(baseline),
        )
        self.network = self.search_state.supernet
        self.optimizer = self.search_state.w_opt  # nnU-Net logs its learning rate
        self.print_to_log_file(
            f"search ({self.iac.method}): {cfg.epochs} paper epochs over {slices} weight-half slices = {epochs} "
            f"nnU-Net epochs of {self.num_iterations_per_epoch} iterations (warm-up {self.search_state.warmup}); "
            f"weight half {len(self._split['weight'])} patients, architecture half {len(self._split['arch'])}"
        )

    def on_train_epoch_start(self) -> None:
        self.network.train()
        self.logger.log("lrs", self.optimizer.param_groups[0]["lr"], self.current_epoch)

    def run_training(self) -> None:
        from iac.nas.search import search_epoch

        self.on_train_start()
        state = self.search_state
        while self.current_epoch < self.num_epochs and not (state.trajectory["epochs"] and state.all_decided):
            t0 = time.perf_counter()
            self.on_epoch_start()
            self.on_train_epoch_start()
            w_log, a_log = search_epoch(state, state.epoch, progress=False)
            self.logger.log("train_losses", float(w_log.mean), self.current_epoch)
            with torch.no_grad():
                self.on_validation_epoch_start()
                outputs = [self.validation_step(next(self.dataloader_val))
                           for _ in range(self.num_val_iterations_per_epoch)]
                self.on_validation_epoch_end(outputs)
            seconds = time.perf_counter() - t0
            rec = state.record_epoch(w_log, a_log, float(self.logger.get_value("mean_fg_dice", step=-1)), seconds)
            self._log_search_epoch(rec)
            self.print_to_log_file(f"genotype {rec['genotype_str']}; surviving operations {rec['surviving_ops']}")
            self.on_epoch_end()
        self.on_train_end()
        self._write_results()

    def _log_search_epoch(self, rec: dict[str, Any]) -> None:
        """The project's per-epoch search values to nnU-Net's extra loggers (its local logger keeps fixed keys).

        What the project's own search logs each epoch (losses, validation, timings,
        surviving operations, operation weights ``alpha/*`` and ``beta/*``, the last
        check's JS divergences ``js/*``), plus the architecture steps and the
        number of pruning events so far, each as ``search/<key>`` at step = epoch.
        """
        from iac.nas.search import _epoch_metrics

        state = self.search_state
        values = {**_epoch_metrics(rec, state.trajectory), "arch_steps": rec["arch_steps"],
                  "pruning_events": len(state.trajectory["events"])}
        values = {f"search/{k}": v for k, v in values.items()}
        for extra in self.logger.loggers:
            if hasattr(extra, "log_many"):
                extra.log_many(values, self.current_epoch)
            else:
                for key, value in values.items():
                    extra.log(key, value, self.current_epoch)

    def _write_results(self) -> None:
        state = self.search_state
        genotype = state.supernet.genotype()
        state.trajectory["final_genotype"] = genotype.to_dict()
        state.trajectory["stopped_early"] = bool(state.trajectory["epochs"] and state.all_decided)
        out = Path(self.output_folder)
        atomic_write_text(out / GENOTYPE_FILE, genotype.to_json())
        atomic_write_text(out / TRAJECTORY_FILE, json.dumps(state.trajectory, default=_json_default))
        self.print_to_log_file(f"genotype written to {out / GENOTYPE_FILE}: {genotype}")

    # checkpoints -------------------------------------------------------------------------------------
    def save_checkpoint(self, filename: str) -> None:
        """The project's search checkpoint (masks, supernet, optimisers, policy, trajectory)."""
        if self.search_state is not None and not self.disable_checkpointing:
            self.search_state.save(Path(filename))

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        raise NNUNetCheckpointError(
            "a search run through nnU-Net cannot be continued with --c; start it again "
            "(the project's `search_lth --resume` resumes searches on prepared data)"
        )

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        """A search has no final network to validate; ``genotype.json`` is its result."""
        self.print_to_log_file("search finished; no final validation (retrain the found cell)")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
