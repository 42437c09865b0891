"""``search_full`` and ``search_lth``: one command body, two policies.

Both search a cell in the skips of a trained baseline U-Net
(:func:`iac.nas.search.run_search`); ``search_lth`` adds the Jensen–Shannon
stability test and progressive pruning. Each logs the trajectory, plots and
``genotype.json`` and the cell diagram (``plots/cell.png``), and registers the
genotype as a small loadable model ``iac-cell-<dataset>-<backbone>``.

Resumption: ``resume=<run id>`` continues a killed search from the newest
verified ``checkpoints/last.pt`` on that run's ``resumed_from`` chain in a
*new* run tagged ``resumed_from=<run id>`` (afresh, with a notice, when the
chain left none; see :mod:`iac.commands.resume`); the result equals an
uninterrupted search (CPU, same seed), and ``search_seconds`` adds the time
already spent in the killed runs.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import click

from iac.commands.common import (
    build_config,
    echo_done,
    log_dataset_input,
    one_of,
    optional,
    prepared_folder,
    setup_logging,
    deterministic_tag,
    step_run,
    tracker_for,
)
from iac.commands.nnunet_steps import nnunet_options
from iac.commands.resume import CheckpointPublisher, ResumePoint, find_resume_point, take_over
from iac.commands.store import open_store
from iac.config import (
    DARTS_OPS,
    BackboneConfig,
    SearchConfig,
    StabilityConfig,
    TrainConfig,
    to_dict,
)

log = logging.getLogger(__name__)
METHODS = ("full", "lth")


def _baseline(cfg: SearchConfig, tags: dict[str, str]) -> str:
    """Train and register a baseline U-Net when no ``pretrained`` is given."""
    from iac.commands.retrain import run_retrain

    click.echo("no pretrained U-Net given: training a baseline first (skip=identity)")
    tcfg = TrainConfig(
        data=cfg.data,
        backbone=cfg.backbone,
        skip="identity",
        seed=cfg.seed,
        device=cfg.device,
        deterministic=cfg.deterministic,
        max_slices_per_epoch=cfg.max_slices_per_epoch,
    )
    return run_retrain(tcfg, {k: v for k, v in tags.items() if k.startswith("iac_study")})["model_uri"]


def run_search_step(
    cfg: SearchConfig,
    method: str,
    stability: StabilityConfig | None,
    extra_tags: dict[str, str] | None = None,
    resume_run: str | None = None,
    reference_run: str | None = None,
) -> dict[str, Any]:
    """Run one search (``method`` full or lth) in its own MLflow run; returns outputs."""
    open_store()
    with tempfile.TemporaryDirectory() as tmp:
        return _search_step(cfg, method, stability, extra_tags, resume_run, reference_run, Path(tmp))


def _search_step(cfg: SearchConfig, method: str, stability: StabilityConfig | None,
                 extra_tags: dict[str, str] | None, resume_run: str | None, reference_run: str | None,
                 tmp: Path) -> dict[str, Any]:
    from iac import registry
    from iac.data.store import PreparedDataset
    from iac.models import registry_backbone_name
    from iac.nas.genotype import SearchSpace
    from iac.nas.pruning import JSStabilityPruning, NoPruning
    from iac.nas.search import CHECKPOINT_KEYS, check_search_checkpoint

    one_of("method", method, METHODS)
    data = PreparedDataset(cfg.data)
    stability = stability or StabilityConfig()
    policy = NoPruning() if method == "full" else JSStabilityPruning(SearchSpace.from_config(cfg), stability)
    # Found and verified before the new run starts: a bad checkpoint stops here with one line.
    point = find_resume_point(resume_run, tmp / "resume", CHECKPOINT_KEYS, lambda s: check_search_checkpoint(s, cfg))
    tags = {
        "dataset": data.name,
        "backbone": registry_backbone_name(cfg.backbone.name, cfg.backbone.preset),
        "method": method,
        "seed": cfg.seed,
        "data_fingerprint": data.fingerprint,
        **point.tags(),
        "deterministic": deterministic_tag(cfg.device, cfg.deterministic),
        **(extra_tags or {}),
    }
    with step_run(f"search_{method}", tags, run_name=f"search-{method}-s{cfg.seed}", system_metrics=True) as run:
        take_over(point.chain, run.info.run_id)
        tracker = tracker_for(run)
        log_dataset_input(data.root, data.name, data.fingerprint, context="search")
        # Without a pretrained U-Net, the baseline is trained first, as a child run of this search
        # (a resumed search reuses the baseline its killed run was given or trained).
        pretrained = cfg.pretrained or _resumed_pretrained(point) or _baseline(cfg, extra_tags or {})
        unet, backbone = _load_baseline(cfg, pretrained)
        tracker.set_tags({"pretrained": pretrained, "backbone": backbone})
        tracker.log_params(_search_params(cfg, method, stability, pretrained, backbone))
        result = _search_and_log(cfg, unet, data, policy, tracker, point.checkpoint,
                                 stability if method == "lth" else None, tmp)
        tracker.log_metrics(_summary(result, reference_run))
        with tempfile.TemporaryDirectory() as tmp:
            diagram = cell_diagram(result.genotype, Path(tmp), f"{method} search, seed {cfg.seed}", tracker)
            mv = registry.register_genotype(
                run.info.run_id,
                result.genotype.to_json(),
                registry.cell_model_name(data.name, backbone),
                {
                    "method": method,
                    "search_seconds": f"{result.search_seconds:.3f}",
                    "epochs_run": result.epochs_run,
                    "seed": cfg.seed,
                    "data_fingerprint": data.fingerprint,
                    "pretrained": pretrained,
                    "search_run": run.info.run_id,
                    "pruning_events": len(result.pruning_log),
                },
                diagram=diagram,
            )
        outputs = {
            "run_id": run.info.run_id,
            "cell_uri": mv.uri,
            "search_seconds": result.search_seconds,
            "epochs_run": result.epochs_run,
            "genotype": str(result.genotype),
        }
        tracker.set_tags({"genotype": str(result.genotype), "cell_uri": mv.uri, "iac_outputs": json.dumps(outputs)})
    echo_done(
        f"search_{method}",
        run,
        f"{result.epochs_run} epochs in {result.search_seconds:.1f} s; cell {mv.uri}: {result.genotype}",
    )
    return outputs


def _resumed_pretrained(point: ResumePoint) -> str | None:
    """The baseline U-Net a run of the resume chain searched on (None without one)."""
    import mlflow

    for rid in point.chain:
        found = mlflow.get_run(rid).data.tags.get("pretrained")
        if found:
            return found
    return None


def _load_baseline(cfg: SearchConfig, pretrained: str) -> tuple[Any, str]:
    """The registered baseline U-Net on the CPU and its registry backbone name."""
    from iac import registry
    from iac.models import registry_backbone_name

    unet, ucfg, _ = registry.load_unet(pretrained, device="cpu")
    net_cfg = ucfg["network"]
    if net_cfg["name"] != cfg.backbone.name:
        warnings.warn(
            f"backbone={cfg.backbone.name} but the pretrained U-Net is a {net_cfg['name']}; searching on the latter",
            stacklevel=3,
        )
    return unet, registry_backbone_name(net_cfg["name"], net_cfg.get("preset", "small"))


def _search_params(cfg: SearchConfig, method: str, stability: StabilityConfig, pretrained: str, backbone: str
                   ) -> dict[str, Any]:
    """The run's parameters; for LTH with the stability settings and their full-speed bound."""
    from iac.nas.stability import full_speed_js

    params = {**to_dict(cfg), "method": method, "pretrained": pretrained, "backbone": backbone}
    if method == "lth":
        params.update({f"lth_{k}": v for k, v in to_dict(stability).items()})
        bound = full_speed_js(cfg.arch_lr, cfg.check_every * stability.window, len(cfg.ops))
        params["lth_full_speed_js"] = bound
        if stability.tau >= bound:
            warnings.warn(
                f"tau={stability.tau:g} is at or above the JS divergence of an edge moving at Adam's full speed "
                f"between checks ({bound:.2g} for arch_lr={cfg.arch_lr:g}, check_every={cfg.check_every}, "
                f"window={stability.window}); the stability test then reduces to the unchanged top-k condition",
                stacklevel=3,
            )
    return params


def _search_and_log(cfg, unet, data, policy, tracker, resume_from: Path | None, stability: StabilityConfig | None,
                    tmp: Path):
    """Run the search with a checkpoint published every epoch; log genotype, trajectory, pruning log and plots."""
    from iac.nas.genotype import save_genotype
    from iac.nas.search import run_search
    from iac.nas.trajectory import save_trajectory

    ckpt = tmp / "ckpt" / "last.pt"
    publisher = CheckpointPublisher(tracker)
    result = run_search(
        cfg,
        unet,
        data,
        policy,
        tracker=tracker,
        checkpoint_path=ckpt,
        resume_from=resume_from,
        on_epoch=lambda rec: publisher.publish(ckpt),
    )
    out_dir = tmp / "out"
    tracker.log_artifact(save_genotype(out_dir / "genotype", result.genotype).parent)
    tracker.log_artifact(save_trajectory(out_dir / "trajectory.json", result.trajectory))
    (out_dir / "pruning_log.json").write_text(json.dumps(result.pruning_log, indent=1))
    tracker.log_artifact(out_dir / "pruning_log.json")
    _log_plots(result.trajectory, stability, tracker)
    return result


# Where a search run keeps its cell diagram (the report shows every plots/*.png).
CELL_DIAGRAM = "plots/cell.png"


def cell_diagram(genotype, folder: Path, title: str, tracker) -> Path:
    """Draw the found cell (nodes, edges, operations), log it as ``plots/cell.png``; returns the PNG."""
    from iac.nas.diagram import cell_figure

    path = folder / Path(CELL_DIAGRAM).name
    fig = cell_figure(genotype, title=title)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    tracker.log_artifact(path, str(Path(CELL_DIAGRAM).parent))
    return path


def _summary(result, reference_run: str | None) -> dict[str, float]:
    """Search time, epochs, early stop, final validation Dice, epoch-time split, and the reference comparison."""
    from iac.nas.trajectory import epoch_time_split

    epochs = result.trajectory["epochs"]
    summary = {
        "search_seconds": result.search_seconds,
        "epochs_run": result.epochs_run,
        "stopped_early": float(result.stopped_early),
        "final_val_dice": epochs[-1]["val_dice"] if epochs else float("nan"),
        "pruning_events": len(result.pruning_log),
        **epoch_time_split(result.trajectory),
    }
    if reference_run:
        summary.update(_compare_with_reference(reference_run, result))
    return summary


def _run_genotype(run_id: str):
    import mlflow

    from iac.nas.genotype import load_genotype

    return load_genotype(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="genotype/genotype.json"))


def _other_full_searches(ref, ref_geno) -> list:
    """Genotypes of the other finished full searches of the same data, backbone and space (other seeds)."""
    import mlflow

    tags = ref.data.tags
    found = mlflow.search_runs(
        experiment_ids=[ref.info.experiment_id],
        filter_string=(f"tags.step = 'search_full' and tags.data_fingerprint = '{tags.get('data_fingerprint', '')}' "
                       f"and tags.backbone = '{tags.get('backbone', '')}' and attributes.status = 'FINISHED'"),
        output_format="list",
    )
    others = []
    for run in found:
        if run.info.run_id == ref.info.run_id or run.data.tags.get("seed") == tags.get("seed"):
            continue
        geno = _run_genotype(run.info.run_id)
        if geno.space.signature() == ref_geno.space.signature():
            others.append(geno)
    return others


def _compare_with_reference(reference_run: str, result) -> dict[str, float]:
    """Speed and genotype agreement with the reference full search, next to chance and full-vs-full agreement."""
    import mlflow

    from iac.nas.agreement import agreement, agreement_metrics

    ref = mlflow.get_run(reference_run)
    ref_secs = ref.data.metrics.get("search_seconds")
    ref_geno = _run_genotype(reference_run)
    others = _other_full_searches(ref, ref_geno)
    out = {
        **agreement_metrics(result.genotype, ref_geno, others),
        "genotype_equal": float(ref_geno == result.genotype),
    }
    log.info("agreement with the full search %s: %s", reference_run, agreement(ref_geno, result.genotype))
    log.info("chance: Jaccard %.2f on average, %.2f at the 95th and %.2f at the 99th percentile%s",
             out["random_jaccard_mean"], out["random_jaccard_p95"], out["random_jaccard_p99"],
             f"; full vs full: {out['full_vs_full_jaccard_mean']:.2f}" if others else "")
    if ref_secs:
        out["speedup_vs_full"] = ref_secs / max(result.search_seconds, 1e-9)
        out["reference_search_seconds"] = ref_secs
    return out


def _log_plots(trajectory: dict[str, Any], stability: StabilityConfig | None, tracker) -> None:
    from iac.nas import plots

    for name, fig in plots.search_figures(trajectory, tau=stability.tau if stability else None).items():
        tracker.log_figure(fig, f"plots/{name}.png")


def run_random_cell(cfg: SearchConfig, extra_tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Register a random genotype from the same search space (``method=random``)."""
    open_store()
    import numpy as np

    from iac import registry
    from iac.data.store import PreparedDataset
    from iac.models import registry_backbone_name
    from iac.nas.genotype import SearchSpace, random_genotype, save_genotype

    data = PreparedDataset(cfg.data)
    space = SearchSpace.from_config(cfg)
    if cfg.pretrained:
        _, ucfg, _ = registry.load_unet(cfg.pretrained)
        net_cfg = ucfg["network"]
        backbone = registry_backbone_name(net_cfg["name"], net_cfg.get("preset", "small"))
        n_levels = len(net_cfg.get("features", [])) - 1 if cfg.per_level else 1
    else:
        backbone, n_levels = registry_backbone_name(cfg.backbone.name, cfg.backbone.preset), 1
    geno = random_genotype(space, np.random.default_rng(cfg.seed), n_levels=max(1, n_levels))
    tags = {"dataset": data.name, "backbone": backbone, "method": "random", "seed": cfg.seed, "data_fingerprint": data.fingerprint, **(extra_tags or {})}
    with step_run("random_cell", tags, run_name=f"random-cell-s{cfg.seed}") as run:
        tracker = tracker_for(run)
        with tempfile.TemporaryDirectory() as tmp:
            tracker.log_artifact(save_genotype(Path(tmp) / "genotype", geno).parent)
            diagram = cell_diagram(geno, Path(tmp), f"random cell, seed {cfg.seed}", tracker)
            mv = registry.register_genotype(
                run.info.run_id,
                geno.to_json(),
                registry.cell_model_name(data.name, backbone),
                {"method": "random", "search_seconds": "0", "epochs_run": 0, "seed": cfg.seed,
                 "data_fingerprint": data.fingerprint, "pretrained": cfg.pretrained or ""},
                diagram=diagram,
            )
        outputs = {"run_id": run.info.run_id, "cell_uri": mv.uri, "genotype": str(geno)}
        tracker.set_tags({"iac_outputs": json.dumps(outputs)})
    return outputs


def search_options(fn):
    """Options shared by search_full and search_lth."""
    opts = [
        click.option("--data", required=True, help="Prepared dataset folder."),
        click.option("--backbone", default="unet", show_default=True, help="Backbone of the baseline to train when no --pretrained is given; nnunet: search in a trained 2-D nnU-Net (--nnunet-*)."),
        click.option("--preset", default="small", show_default=True, help="Backbone size preset."),
        click.option("--epochs", default=200, show_default=True, type=int, help="Search epochs (the paper's full search: 200)."),
        click.option("--pretrained", default="", help="Registered baseline U-Net (models:/...); empty = train one first."),
        click.option("--resume", default="", help="Run id of a killed search to continue."),
        click.option("--freeze-backbone", type=click.BOOL, default=True, show_default=True, help="Keep the pre-trained U-Net frozen (true/false)."),
        click.option("--warmup-epochs", default=15, show_default=True, type=int, help="Weight-only epochs before architecture steps (clamped to epochs/2)."),
        click.option("--w-lr", default=3e-3, show_default=True, type=float, help="Cell-weight learning rate (AdamW, cosine)."),
        click.option("--arch-lr", default=6e-4, show_default=True, type=float, help="Architecture Adam learning rate."),
        click.option("--batch-size", default=16, show_default=True, type=int),
        click.option("--k", default=4, show_default=True, type=int, help="PC-DARTS partial-channel ratio."),
        click.option("--nodes", default=4, show_default=True, type=int, help="Intermediate nodes per cell."),
        click.option("--cell-channels", default=16, show_default=True, type=int),
        click.option("--ops", default=",".join(DARTS_OPS), show_default=True, help="Comma-separated candidate operations."),
        click.option("--cell-inputs", default="skip+up", show_default=True, help="skip+up or skip."),
        click.option("--per-level", type=click.BOOL, default=False, show_default=True, help="One architecture per skip level (true/false)."),
        click.option("--seed", default=0, show_default=True, type=int),
        click.option("--device", default="auto", show_default=True),
        click.option("--deterministic", type=click.BOOL, default=False, show_default=True, help="Deterministic CUDA kernels, cuDNN autotuner off (true/false; CPU runs always are)."),
        click.option("--max-slices-per-epoch", default=0, show_default=True, type=int, help="Cap on slices per epoch (0 = all)."),
        click.option("--check-every", default=50, show_default=True, type=int, help="Architecture steps between stability checks."),
        click.option("--reference-run", default="", help="A search_full run to compare speed and genotype with."),
        click.option("--w-optimizer", default="adamw", show_default=True, help="Cell-weight optimiser: adamw or sgd (PC-DARTS)."),
        click.option("--w-momentum", default=0.9, show_default=True, type=float, help="SGD momentum of the cell weights."),
        click.option("--w-grad-clip", default="", help="Clip the cell weights' gradient norm to this (PC-DARTS: 5); empty = no clipping."),
        click.option("--step-order", default="weights_first", show_default=True, help="weights_first or arch_first (PC-DARTS)."),
        click.option("--arch-precision", default="fp32", show_default=True, help="Architecture step: fp32, or bf16 autocast on CUDA."),
        click.option("--recompute-backward", default="auto", show_default=True,
                     help="Cell stages keep only their inputs for the backward pass, less memory for more time: "
                          "auto (on CUDA only), true or false."),
        click.option("--compile-cells", type=click.BOOL, default=False, show_default=True,
                     help="torch.compile the search cells, again after each pruning event (true/false)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return nnunet_options(fn)


def _optional_float(name: str, text: str) -> float | None:
    """An optional number given as text ('' = unset)."""
    text = optional(text)
    try:
        return None if text is None else float(text)
    except ValueError:
        raise click.BadParameter(f"expected a number or empty, got {text!r}", param_hint=f"--{name}") from None


def build_search_config(o: dict[str, Any], check_data: bool = True) -> SearchConfig:
    """Build the SearchConfig from the shared options (it validates itself); ``check_data``: ``data`` is prepared."""
    cfg = build_config(
        SearchConfig,
        data=Path(o["data"]),
        backbone=build_config(BackboneConfig, name=o["backbone"], preset=o["preset"]),
        epochs=o["epochs"],
        pretrained=optional(o["pretrained"]),
        freeze_backbone=o["freeze_backbone"],
        warmup_epochs=o["warmup_epochs"],
        w_lr=o["w_lr"],
        arch_lr=o["arch_lr"],
        batch_size=o["batch_size"],
        ops=tuple(x.strip() for x in o["ops"].split(",") if x.strip()),
        nodes=o["nodes"],
        k=o["k"],
        cell_channels=o["cell_channels"],
        cell_inputs=o["cell_inputs"],
        per_level=o["per_level"],
        seed=o["seed"],
        device=o["device"],
        deterministic=o["deterministic"],
        resume=optional(o["resume"]),
        max_slices_per_epoch=o["max_slices_per_epoch"] or None,
        check_every=o["check_every"],
        w_optimizer=o["w_optimizer"],
        w_momentum=o["w_momentum"],
        w_grad_clip=_optional_float("w-grad-clip", o["w_grad_clip"]),
        step_order=o["step_order"],
        arch_precision=o["arch_precision"],
        recompute_backward=o["recompute_backward"],
        compile_cells=o["compile_cells"],
    )
    if check_data:
        prepared_folder("data", o["data"])  # after the values: a usage error names the first bad option
    return cfg


def _run(method: str, o: dict[str, Any], stability: StabilityConfig | None) -> None:
    from iac.commands.nnunet_steps import nnunet_values, run_nnunet_search

    setup_logging()
    nnunet = nnunet_values(o)
    if nnunet:  # a search in a trained 2-D nnU-Net: `data` and the project's backbone options are not used
        for name in ("resume", "reference_run"):
            if optional(o[name]):
                raise click.BadParameter("not available with --backbone nnunet (a search inside nnU-Net starts afresh)",
                                         param_hint=f"--{name.replace('_', '-')}")
        cfg = build_search_config({**o, "backbone": BackboneConfig.name}, check_data=False)
        try:
            run_nnunet_search(cfg, method, stability, nnunet)
        except ValueError as e:
            raise click.ClickException(str(e)) from e
        return
    cfg = build_search_config(o)
    try:
        run_search_step(cfg, method, stability, resume_run=cfg.resume, reference_run=optional(o["reference_run"]))
    except ValueError as e:
        raise click.ClickException(str(e)) from e


@click.command("search_full")
@search_options
def search_full(**o: Any) -> None:
    """Full PC-DARTS search of an IAC cell (no pruning; the paper's 200 epochs)."""
    _run("full", o, None)


@click.command("search_lth")
@search_options
@click.option("--tau", default=StabilityConfig.tau, show_default=True, type=float, help="JS divergence threshold (base 2).")
@click.option("--patience", default=StabilityConfig.patience, show_default=True, type=int, help="Consecutive stable checks.")
@click.option("--window", default=StabilityConfig.window, show_default=True, type=int, help="Compare with the distribution this many checks earlier.")
@click.option("--smoothing", default=StabilityConfig.smoothing, show_default=True, type=float, help="EMA factor on the distributions (0 = none).")
@click.option("--keep-schedule", default="3,2,1", show_default=True, help="Top-k kept at successive stabilities.")
@click.option("--criterion", default=StabilityConfig.criterion, show_default=True, help="js (the paper's divergence test) or sequential (margin confidence sequence).")
@click.option("--seq-error", default=StabilityConfig.seq_error, show_default=True, type=float, help="sequential: chance of ever cutting an operation without a real handicap.")
@click.option("--seq-effect", default=StabilityConfig.seq_effect, show_default=True, type=float, help="sequential: smallest margin drift per unit of its variance worth finding.")
@click.option("--seq-miss", default=StabilityConfig.seq_miss, show_default=True, type=float, help="sequential: chance of calling a handicap of seq_effect 'no preference'.")
def search_lth(tau: float, patience: int, window: int, smoothing: float, keep_schedule: str, criterion: str,
               seq_error: float, seq_effect: float, seq_miss: float, **o: Any) -> None:
    """IAC-LTH search: prune stable edges early and stop when every edge is decided."""
    try:
        schedule = tuple(int(x) for x in keep_schedule.split(","))
    except ValueError as e:
        raise click.BadParameter(f"{keep_schedule!r} is not a comma-separated list of integers", param_hint="--keep-schedule") from e
    stab = build_config(StabilityConfig, tau=tau, patience=patience, window=window, smoothing=smoothing,
                        keep_schedule=schedule, criterion=criterion, seq_error=seq_error, seq_effect=seq_effect,
                        seq_miss=seq_miss)
    _run("lth", o, stab)
