"""Build the network a ``retrain`` run trains, and train it.

A run trains one U-Net with one skip kind. With ``pretrained`` it starts from
a registered U-Net's weights (the backbone must load completely; skip-module
weights load where they exist): a plain U-Net continued for the same extra
epochs is the fair control of an implanted cell. With ``skip=iac`` the
discrete cell of a genotype is implanted around the identity skips; its last
projection starts at zero, so training starts from the pre-trained output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from iac.config import TrainConfig
from iac.tracking import Tracker

MODEL_CONFIG_FORMAT = 1
SKIP_PREFIX = "skip_modules."


class PretrainedMismatchError(ValueError):
    """The pre-trained weights do not fit the network to train."""


@dataclass
class TrainOutcome:
    net: torch.nn.Module
    state: dict[str, torch.Tensor]
    val_dice: float | None
    best_epoch: int
    seconds: float
    history: list[dict[str, float]]
    n_parameters: int


def build_network(
    cfg: TrainConfig,
    in_channels: int,
    num_classes: int,
    genotype_json: str | None = None,
    pretrained_config: dict[str, Any] | None = None,
) -> torch.nn.Module:
    """The network to train: backbone from ``pretrained_config`` when given, else from ``cfg``."""
    from iac.models import create_backbone

    if pretrained_config is not None:
        net_cfg = pretrained_config["network"]
        name, preset, features = net_cfg["name"], net_cfg.get("preset", cfg.backbone.preset), net_cfg.get("features")
        if (net_cfg.get("in_channels"), net_cfg.get("num_classes")) != (in_channels, num_classes):
            raise PretrainedMismatchError(
                f"the pretrained U-Net takes {net_cfg.get('in_channels')} channels and predicts "
                f"{net_cfg.get('num_classes')} classes; this dataset has {in_channels} and {num_classes}"
            )
    else:
        name, preset, features = cfg.backbone.name, cfg.backbone.preset, None
    skip_kwargs = None
    if cfg.skip == "iac":
        if not genotype_json:
            raise ValueError("skip=iac needs a genotype (models:/iac-cell-.../N, runs:/... or a genotype.json path)")
        skip_kwargs = {"genotype": json.loads(genotype_json)}
    # The initial weights follow the seed: a process's default generator is seeded at random,
    # so without this two runs with the same seed (or a run restarted afresh) start apart.
    torch.manual_seed(cfg.seed)
    return create_backbone(
        name,
        in_channels,
        num_classes,
        preset=preset,
        spatial_dims=cfg.backbone.spatial_dims,
        skip=cfg.skip,
        skip_kwargs=skip_kwargs,
        features=features,
    )


def load_pretrained(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Load pre-trained weights: every backbone tensor must load; skip modules where they match.

    Returns:
        The names of the network's tensors that kept their fresh initialisation.
    """
    own = net.state_dict()
    backbone_missing = [k for k in own if not k.startswith(SKIP_PREFIX) and k not in state]
    shape_clash = [k for k in own if k in state and own[k].shape != state[k].shape]
    if backbone_missing or shape_clash:
        raise PretrainedMismatchError(
            "the pretrained U-Net does not fit this backbone: "
            + (f"missing {backbone_missing[:5]}{'...' if len(backbone_missing) > 5 else ''} " if backbone_missing else "")
            + (f"shape differs for {shape_clash[:5]}" if shape_clash else "")
        )
    loadable = {k: v for k, v in state.items() if k in own}
    net.load_state_dict(loadable, strict=False)
    return sorted(set(own) - set(loadable))


def model_config(net: torch.nn.Module, data, backbone_name: str) -> dict[str, Any]:
    """JSON config stored beside the weights (enough to rebuild and to preprocess raw input)."""
    return {
        "format": MODEL_CONFIG_FORMAT,
        "network": net.config,
        "backbone_name": backbone_name,
        "dataset": data.name,
        "data_fingerprint": data.fingerprint,
        "label_names": {str(k): v for k, v in data.label_names.items()},
        "channel_names": list(data.channel_names),
        "preprocessing": data.preprocess_params.to_dict(),
    }


def train_network(
    cfg: TrainConfig,
    net: torch.nn.Module,
    data,
    tracker: Tracker,
    checkpoint_dir: Path,
    resume_from: Path | None = None,
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
    progress: bool = True,
) -> TrainOutcome:
    """Train ``net`` on the train split with validation-based model selection."""
    from iac.data.dataset import SliceDataset
    from iac.train.augment import make_augment
    from iac.eval.validate import make_validator
    from iac.train.trainer import Trainer

    train_ds = SliceDataset(data, "train", augment=make_augment(cfg.augment, cfg.seed))
    validate = make_validator(data, "val", batch_size=cfg.batch_size)
    trainer = Trainer.from_config(
        net,
        train_ds,
        cfg,
        validate=validate,
        tracker=tracker,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
        on_epoch_end=on_epoch_end,
    )
    result = trainer.fit(resume=resume_from)
    net.load_state_dict(result.best_state)
    return TrainOutcome(
        net=net,
        state=result.best_state,
        val_dice=result.best_val_dice,
        best_epoch=result.best_epoch,
        seconds=result.seconds,
        history=result.history,
        n_parameters=sum(p.numel() for p in net.parameters()),
    )
