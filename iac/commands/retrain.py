"""``retrain``: train a U-Net with one skip kind and register it.

Resumption: ``resume=<run id>`` continues from the newest verified
``checkpoints/last.pt`` on that run's ``resumed_from`` chain in a new run
tagged ``resumed_from`` (afresh, with a notice, when the chain left none; see
:mod:`iac.commands.resume`); on CPU the final weights equal those of an
uninterrupted run with the same seed.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import click

from iac.commands.common import (
    build_config,
    deterministic_tag,
    echo_done,
    log_dataset_input,
    optional,
    prepared_folder,
    setup_logging,
    step_run,
    tracker_for,
)
from iac.commands.nnunet_steps import nnunet_options
from iac.commands.resume import CheckpointPublisher, find_resume_point, take_over
from iac.commands.store import open_store
from iac.config import BackboneConfig, TrainConfig, to_dict


def run_retrain(cfg: TrainConfig, extra_tags: dict[str, str] | None = None, resume_run: str | None = None) -> dict[str, Any]:
    """Train and register one U-Net inside its own MLflow run; returns outputs."""
    open_store()
    with tempfile.TemporaryDirectory() as tmp:
        return _retrain(cfg, extra_tags, resume_run, Path(tmp))


def _retrain(cfg: TrainConfig, extra_tags: dict[str, str] | None, resume_run: str | None, tmp: Path) -> dict[str, Any]:
    from iac.data.store import PreparedDataset
    from iac.models import registry_backbone_name
    from iac.train.trainer import CHECKPOINT_KEYS, check_trainer_checkpoint

    data = PreparedDataset(cfg.data)
    genotype_json, cell_tags, genotype_uri = _resolve_cell(cfg)
    pretrained = cfg.pretrained or cell_tags.get("pretrained") or None
    net, fresh = _network(cfg, data, genotype_json, pretrained)
    # Found and verified before the new run starts: a bad checkpoint stops here with one line.
    point = find_resume_point(resume_run, tmp / "resume", CHECKPOINT_KEYS, lambda s: check_trainer_checkpoint(s, net, cfg.implant_lr_scale))
    backbone = registry_backbone_name(net.config["name"], net.config.get("preset", "small"))
    tags = {
        "dataset": data.name,
        "backbone": backbone,
        "skip": cfg.skip,
        "seed": cfg.seed,
        "data_fingerprint": data.fingerprint,
        "pretrained": pretrained or "",
        "genotype": genotype_uri,
        "cell_method": cell_tags.get("method"),
        **point.tags(),
        "deterministic": deterministic_tag(cfg.device, cfg.deterministic),
        **(extra_tags or {}),
    }
    with step_run("retrain", tags, run_name=f"retrain-{cfg.skip}", system_metrics=True) as run:
        take_over(point.chain, run.info.run_id)
        tracker = tracker_for(run)
        log_dataset_input(data.root, data.name, data.fingerprint, context="training")
        params = to_dict(cfg)
        params.update({"backbone": backbone, "pretrained": pretrained or "", "genotype": genotype_uri or ""})
        tracker.log_params(params)
        if fresh is not None:
            tracker.log_params({"fresh_tensors_after_pretrained": len(fresh)})
        outcome = _train(cfg, net, data, tracker, point.checkpoint, tmp / "ckpt")
        tracker.log_metrics({"n_parameters": outcome.n_parameters, "train_seconds": outcome.seconds})
        model_tags = {
            "skip": cfg.skip,
            "seed": cfg.seed,
            "val_dice": f"{outcome.val_dice:.6f}" if outcome.val_dice is not None else "nan",
            "data_fingerprint": data.fingerprint,
            "pretrained": pretrained or "",
            "backbone": backbone,
            "dataset": data.name,
            "epochs": cfg.epochs,
            "train_run": run.info.run_id,
        }
        if cfg.skip == "iac":
            model_tags.update({"genotype": genotype_uri, "cell_method": cell_tags.get("method", "file")})
        uri = _register(run.info.run_id, outcome.state, net, data, backbone, model_tags)
        outputs = {"run_id": run.info.run_id, "model_uri": uri, "val_dice": outcome.val_dice}
        tracker.set_tags({"iac_outputs": json.dumps(outputs)})
    val = outcome.val_dice
    echo_done("retrain", run, f"registered {uri} (val Dice {val:.4f})" if val is not None else f"registered {uri}")
    return outputs


def _resolve_cell(cfg: TrainConfig) -> tuple[str | None, dict[str, str], str | None]:
    """With ``skip=iac``: the cell's genotype JSON, its version tags and its resolved URI (else Nones)."""
    from iac import registry
    from iac.nas.genotype import Genotype

    if cfg.skip != "iac":
        return None, {}, None
    genotype_json, cell_tags = registry.load_genotype_json(cfg.genotype)
    Genotype.from_json(genotype_json).validate()
    uri = registry.resolve(cfg.genotype).uri if cfg.genotype.startswith("models:/") else cfg.genotype
    return genotype_json, cell_tags, uri


def _network(cfg: TrainConfig, data, genotype_json: str | None, pretrained: str | None):
    """The network to train, with the registered ``pretrained`` U-Net's weights loaded when given.

    Returns:
        ``(network, names of tensors not in the pretrained weights or None)``.
    """
    from iac import registry
    from iac.train.retrain import build_network, load_pretrained

    pre_state, pre_config = None, None
    if pretrained:
        pre_net, pre_config, _ = registry.load_unet(pretrained, device="cpu")
        pre_state = pre_net.state_dict()
    net = build_network(cfg, data.in_channels, data.num_classes, genotype_json, pre_config)
    fresh = load_pretrained(net, pre_state) if pre_state is not None else None
    return net, fresh


def _train(cfg: TrainConfig, net, data, tracker, resume_from: Path | None, ckpt_dir: Path):
    """Train with a checkpoint published after every epoch (what ``resume`` continues from)."""
    from iac.train.retrain import train_network

    publisher = CheckpointPublisher(tracker)
    return train_network(
        cfg,
        net,
        data,
        tracker,
        ckpt_dir,
        resume_from=resume_from,
        on_epoch_end=lambda rec: publisher.publish(ckpt_dir / "last.pt"),
    )


def _register(run_id: str, state, net, data, backbone: str, model_tags: dict[str, Any]) -> str:
    """Register the trained weights as a new version of ``iac-unet-<dataset>-<backbone>`` and move its champion."""
    from iac import registry
    from iac.train.retrain import model_config

    name = registry.unet_model_name(data.name, backbone)
    mv = registry.register_unet(run_id, state, model_config(net, data, backbone), name, model_tags)
    registry.update_champion(name, data.fingerprint)
    return mv.uri


@click.command("retrain")
@click.option("--data", required=True, help="Prepared dataset folder.")
@click.option("--backbone", default="unet", show_default=True, help="unet, resunet or basicunet; nnunet: a trained 2-D nnU-Net (--nnunet-*).")
@click.option("--preset", default="small", show_default=True, help="Backbone size preset.")
@click.option("--skip", default="identity", show_default=True, help="identity, attention, residual, dense or iac.")
@click.option("--genotype", default="", help="With skip=iac: models:/iac-cell-.../N (or @champion), runs:/<id>, or a genotype.json path.")
@click.option("--epochs", default=30, show_default=True, type=int)
@click.option("--lr", default=1e-3, show_default=True, type=float, help="AdamW learning rate.")
@click.option("--weight-decay", default=1e-4, show_default=True, type=float)
@click.option("--lr-schedule", default="cosine", show_default=True, help="cosine or constant.")
@click.option("--implant-lr-scale", default=1.0, show_default=True, type=float,
              help="With skip=iac: learning-rate multiplier of the implanted cells and their output projections.")
@click.option("--batch-size", default=16, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--augment", type=click.BOOL, default=False, show_default=True, help="MONAI spatial and intensity augmentation (true/false).")
@click.option("--pretrained", default="", help="Registered U-Net to start from (models:/...).")
@click.option("--resume", default="", help="Run id of an interrupted retrain to continue.")
@click.option("--device", default="auto", show_default=True)
@click.option("--deterministic", type=click.BOOL, default=False, show_default=True, help="Deterministic CUDA kernels, cuDNN autotuner off (true/false; CPU runs always are).")
@click.option("--max-slices-per-epoch", default=0, show_default=True, type=int, help="Cap on slices per epoch (0 = all).")
@nnunet_options
def retrain(**o: Any) -> None:
    """Train a U-Net with the chosen skip modules and register it."""
    from iac.commands.nnunet_steps import nnunet_values, run_nnunet_retrain

    setup_logging()
    nnunet = nnunet_values(o)
    if nnunet:  # the fold's trained 2-D nnU-Net with a cell, retrained with nnU-Net's loop
        if o["implant_lr_scale"] != 1.0:
            raise click.UsageError("--implant-lr-scale: not used with backbone=nnunet (nnU-Net's own loop trains it); leave it at 1")
        try:
            run_nnunet_retrain(o, nnunet)
        except ValueError as e:
            raise click.ClickException(str(e)) from e
        return
    cfg = build_config(
        TrainConfig,
        data=Path(o["data"]),
        backbone=build_config(BackboneConfig, name=o["backbone"], preset=o["preset"]),
        skip=o["skip"],
        genotype=optional(o["genotype"]),
        epochs=o["epochs"],
        lr=o["lr"],
        weight_decay=o["weight_decay"],
        lr_schedule=o["lr_schedule"],
        implant_lr_scale=o["implant_lr_scale"],
        batch_size=o["batch_size"],
        seed=o["seed"],
        augment=o["augment"],
        pretrained=optional(o["pretrained"]),
        resume=optional(o["resume"]),
        device=o["device"],
        deterministic=o["deterministic"],
        max_slices_per_epoch=o["max_slices_per_epoch"] or None,
    )
    prepared_folder("data", o["data"])  # after the values: a usage error names the first bad option
    try:
        run_retrain(cfg, resume_run=cfg.resume)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
