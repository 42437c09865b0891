"""The ``2d_iac`` configuration of an nnU-Net plans file.

nnU-Net merges ``inherits_from`` shallowly (the child's top-level keys replace
the parent's), so the configuration written here carries the whole
``architecture`` block of its 2-D parent: the network class swapped for the
one with the skip seam (:data:`iac.nnunet.network.NETWORK_CLASSES`), every
keyword argument, ``_kw_requires_import``, and ``genotype`` (the genotype's
JSON text, or None before a search). It inherits everything else (patch size,
spacing, normalisation, and ``data_identifier``: the 2-D preprocessed data are
reused). ``nnUNetv2_train D 2d_iac F -p <plans>`` and ``nnUNetv2_predict ...
-c 2d_iac`` then build the network with cells from the plans alone.

The configuration's ``iac`` block holds what the trainers need beyond nnU-Net's
own settings: the baseline to start from (trainer, plans, configuration), the
search settings (the project's ``SearchConfig`` and ``StabilityConfig`` fields)
and the budgets (see :mod:`iac.nnunet.budget`).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from iac.atomic import atomic_write_text
from iac.config import SearchConfig, StabilityConfig, to_dict
from iac.nas.genotype import Genotype
from iac.nnunet.network import NETWORK_CLASSES, parse_genotype

__all__ = ["PlansError", "IACPlanSettings", "add_iac_configuration", "write_iac_plans", "iac_block",
           "DEFAULT_CONFIGURATION", "BASE_CONFIGURATION", "SEARCH_FIELDS"]

DEFAULT_CONFIGURATION = "2d_iac"
BASE_CONFIGURATION = "2d"
# SearchConfig fields a plans file carries (the data, backbone and registry fields belong to the project's own path).
SEARCH_FIELDS = (
    "epochs", "warmup_epochs", "w_lr", "w_weight_decay", "w_optimizer", "w_momentum", "w_grad_clip", "step_order",
    "arch_precision", "arch_lr", "arch_betas", "arch_weight_decay", "ops", "nodes", "k", "cell_channels",
    "cell_inputs", "per_level", "steps_per_node", "seed", "amp", "check_every", "freeze_backbone",
)
METHODS = ("full", "lth")


class PlansError(ValueError):
    """A plans file or configuration that cannot carry the cells."""


@dataclass(frozen=True)
class IACPlanSettings:
    """What the ``iac`` block of the configuration holds (every default documented in docs/deviations.md).

    Attributes:
        method: ``lth`` (stability test and pruning, stops when every edge is decided) or ``full``.
        search: the project's search settings (``epochs`` and ``warmup_epochs`` in the paper's epochs).
        stability: the project's stability settings (``method='lth'``).
        retrain_epochs: retraining budget in the paper's epochs (passes over the fold's training slices).
        iterations_per_epoch: training iterations of one nnU-Net epoch (nnU-Net: 250).
        val_iterations_per_epoch: validation iterations of one nnU-Net epoch (nnU-Net: 50).
        max_nnunet_epochs: cap on the mapped nnU-Net epochs (0 = none; CPU checks shrink epochs with it).
        baseline_trainer / baseline_plans / baseline_configuration: where the trained baseline of a fold is.
    """

    method: str = "lth"
    search: SearchConfig = field(default_factory=SearchConfig)
    stability: StabilityConfig = field(default_factory=StabilityConfig)
    retrain_epochs: int = 30  # as the project's `retrain` entry point
    iterations_per_epoch: int = 250  # nnU-Net's default
    val_iterations_per_epoch: int = 50  # nnU-Net's default
    max_nnunet_epochs: int = 0
    baseline_trainer: str = "nnUNetTrainer"
    baseline_plans: str = "nnUNetPlans"
    baseline_configuration: str = BASE_CONFIGURATION

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise PlansError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name in ("retrain_epochs", "iterations_per_epoch", "val_iterations_per_epoch"):
            if int(getattr(self, name)) < 1:
                raise PlansError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_nnunet_epochs < 0:
            raise PlansError(f"max_nnunet_epochs must be 0 (no cap) or positive, got {self.max_nnunet_epochs}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON ``iac`` block."""
        search = to_dict(self.search)
        return {
            "method": self.method,
            "search": {k: search[k] for k in SEARCH_FIELDS},
            "stability": to_dict(self.stability),
            "retrain_epochs": self.retrain_epochs,
            "iterations_per_epoch": self.iterations_per_epoch,
            "val_iterations_per_epoch": self.val_iterations_per_epoch,
            "max_nnunet_epochs": self.max_nnunet_epochs,
            "baseline": {"trainer": self.baseline_trainer, "plans": self.baseline_plans,
                         "configuration": self.baseline_configuration},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "IACPlanSettings":
        """Rebuild from the ``iac`` block (tuples restored, every value validated again)."""
        def tupled(m: Mapping[str, Any]) -> dict[str, Any]:
            return {k: tuple(v) if isinstance(v, list) else v for k, v in m.items()}

        base = d.get("baseline", {})
        return cls(
            method=d.get("method", "lth"),
            search=SearchConfig(**tupled(d.get("search", {}))),
            stability=StabilityConfig(**tupled(d.get("stability", {}))),
            retrain_epochs=int(d.get("retrain_epochs", 30)),
            iterations_per_epoch=int(d.get("iterations_per_epoch", 250)),
            val_iterations_per_epoch=int(d.get("val_iterations_per_epoch", 50)),
            max_nnunet_epochs=int(d.get("max_nnunet_epochs", 0)),
            baseline_trainer=base.get("trainer", "nnUNetTrainer"),
            baseline_plans=base.get("plans", "nnUNetPlans"),
            baseline_configuration=base.get("configuration", BASE_CONFIGURATION),
        )


def _resolved(plans: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A configuration with its ``inherits_from`` chain merged as nnU-Net merges it (shallowly)."""
    configs = plans.get("configurations", {})
    if name not in configs:
        raise PlansError(f"the plans have no configuration {name!r}; they have {', '.join(sorted(configs))}")
    conf = copy.deepcopy(configs[name])
    seen = {name}
    while "inherits_from" in conf:
        parent = conf.pop("inherits_from")
        if parent in seen or parent not in configs:
            raise PlansError(f"configuration {name!r} inherits from {parent!r}, which is missing or circular")
        seen.add(parent)
        merged = copy.deepcopy(configs[parent])
        merged.update(conf)
        conf = merged
    return conf


def _check_2d(conf: Mapping[str, Any], name: str) -> None:
    patch = conf.get("patch_size", [])
    conv = str(conf.get("architecture", {}).get("arch_kwargs", {}).get("conv_op", ""))
    if len(patch) != 2 or not conv.endswith("Conv2d"):
        raise PlansError(
            f"configuration {name!r} is not 2-D (patch size {list(patch)}, {conv.rsplit('.', 1)[-1] or 'no conv'}); "
            "cells are searched in 2-D U-Nets: use a 2-D configuration such as '2d'"
        )


def iac_block(plans: Mapping[str, Any], configuration: str) -> IACPlanSettings:
    """The validated ``iac`` settings of a configuration.

    Raises:
        PlansError: the configuration has no ``iac`` block (was the plans command run?).
    """
    conf = _resolved(plans, configuration)
    if "iac" not in conf:
        raise PlansError(
            f"configuration {configuration!r} of plans {plans.get('plans_name', '?')!r} has no 'iac' settings; "
            f"write it with `iac nnunet-plans` (default name {DEFAULT_CONFIGURATION!r})"
        )
    return IACPlanSettings.from_dict(conf["iac"])


def add_iac_configuration(
    plans: Mapping[str, Any],
    settings: IACPlanSettings | None = None,
    genotype: Genotype | Mapping[str, Any] | str | None = None,
    base: str = BASE_CONFIGURATION,
    name: str = DEFAULT_CONFIGURATION,
) -> dict[str, Any]:
    """A copy of ``plans`` with the configuration ``name`` built on the 2-D configuration ``base``.

    Args:
        plans: an nnU-Net plans dict.
        settings: the ``iac`` block (defaults: LTH search, the project's defaults).
        genotype: the found cell (None before the search: the plain skips).
        base: the 2-D configuration whose architecture is carried over.
        name: the new configuration's name.

    Raises:
        PlansError: ``base`` missing or not 2-D, a network class without a version with cells.
        GenotypeError: ``genotype`` is not a genotype of the project's search space.
    """
    settings = settings or IACPlanSettings()
    conf = _resolved(plans, base)
    _check_2d(conf, base)
    arch = copy.deepcopy(conf["architecture"])
    cls = arch["network_class_name"]
    if cls not in NETWORK_CLASSES:
        if cls in NETWORK_CLASSES.values():
            raise PlansError(f"configuration {base!r} already uses {cls}; build on the plain 2-D configuration")
        raise PlansError(f"network class {cls} of configuration {base!r} has no version with cells; "
                         f"supported: {', '.join(NETWORK_CLASSES)}")
    geno = parse_genotype(genotype)
    arch["network_class_name"] = NETWORK_CLASSES[cls]
    arch["arch_kwargs"]["genotype"] = geno.to_json() if geno is not None else None
    out = copy.deepcopy(dict(plans))
    out["configurations"][name] = {"inherits_from": base, "architecture": arch, "iac": settings.to_dict()}
    return out


def write_iac_plans(
    plans_file: str | Path,
    out_file: str | Path,
    settings: IACPlanSettings | None = None,
    genotype: Genotype | Mapping[str, Any] | str | None = None,
    base: str = BASE_CONFIGURATION,
    name: str = DEFAULT_CONFIGURATION,
) -> Path:
    """Read ``plans_file``, add the ``name`` configuration and write ``out_file`` atomically.

    ``out_file``'s stem becomes the plans name (``-p`` of nnU-Net's commands).
    """
    plans_file, out_file = Path(plans_file), Path(out_file)
    if not plans_file.is_file():
        raise PlansError(f"no plans file {plans_file}; run nnUNetv2_plan_and_preprocess first")
    try:
        plans = json.loads(plans_file.read_text())
    except json.JSONDecodeError as exc:
        raise PlansError(f"{plans_file} is not JSON: {exc}") from exc
    out = add_iac_configuration(plans, settings, genotype, base, name)
    out["plans_name"] = out_file.stem
    return atomic_write_text(out_file, json.dumps(out, indent=2))
