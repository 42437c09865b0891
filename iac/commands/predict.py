"""``predict``: segment a folder (or list) of raw images with a registered U-Net.

The counterpart of ``nnUNetv2_predict -i IN -o OUT``: every image (any format
``prepare`` reads; channel files named as nnU-Net names them) gets one label
file on its own grid in ``out``. Images that cannot be read or segmented are
listed (and in ``predict_summary.json``), not fatal unless ``--strict``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import click

from iac.commands.common import (
    build_config,
    echo_done,
    log_dataset_input,
    optional,
    setup_logging,
    step_run,
    tracker_for,
)
from iac.config import LABEL_ENDINGS, PredictConfig, to_dict


def _inputs_digest(files: list[Path]) -> str:
    """A digest of the input images (names, sizes, modification times)."""
    h = hashlib.sha256()
    for f in sorted(files):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}\n".encode())
    return h.hexdigest()


def load_predictor(uri: str, device: str):
    """The registered U-Net as a pyfunc model on ``device``, and its input channel names."""
    import mlflow

    try:
        model = mlflow.pyfunc.load_model(uri, model_config={"device": device})
    except Exception as err:  # noqa: BLE001 - MLflow raises several types for a missing or foreign model
        raise ValueError(f"cannot load {uri!r} as a U-Net model: {str(err).splitlines()[0]}") from err
    inner = model.unwrap_python_model()
    config = getattr(inner, "config", None)
    if not isinstance(config, dict) or "preprocessing" not in config:
        raise ValueError(f"{uri!r} is not an IAC U-Net (iac-unet-...): it has no preprocessing config")
    return model, tuple(config["preprocessing"].get("channel_names", ("image",)))


def run_predict(cfg: PredictConfig, progress: bool | None = None, echo=click.echo) -> dict[str, Any]:
    """Segment every image of ``cfg.inputs`` into ``cfg.out`` inside a ``predict`` run; returns outputs.

    Raises:
        ValueError: the model cannot be loaded, or the inputs hold no image (or an
            incomplete multi-channel case); with ``strict``, the first image that fails.
    """
    from iac.eval.batch_predict import find_cases, predict_cases
    from iac.progress import bars_enabled
    from iac.serving import segment_file

    model, channels = load_predictor(cfg.model, cfg.device)
    cases = find_cases(cfg.inputs, channels)
    files = [f for c in cases for f in c.files]
    tags = {"model_uri": cfg.model, "n_images": len(cases)}
    with step_run("predict", tags, run_name="predict", system_metrics=True) as run:
        tracker = tracker_for(run)
        tracker.log_params(to_dict(cfg))
        folder = cfg.inputs[0] if len(cfg.inputs) == 1 and Path(cfg.inputs[0]).is_dir() else Path(files[0]).parent
        log_dataset_input(folder, Path(folder).name, _inputs_digest(files), context="inference")
        summary = predict_cases(
            cases,
            lambda paths, out: segment_file(model, list(paths), out),
            Path(cfg.out),
            suffix=cfg.suffix,
            strict=cfg.strict,
            progress=bars_enabled() if progress is None else progress,
            echo=echo,
        )
        tracker.log_metrics({"images_segmented": len(summary.written), "images_failed": len(summary.failed),
                             "predict_seconds": summary.seconds})
        tracker.log_artifact(Path(cfg.out) / "predict_summary.json")
        outputs = {"run_id": run.info.run_id, "out": str(Path(cfg.out).resolve()), "written": len(summary.written),
                   "failed": summary.failed}
        tracker.set_tags({"iac_outputs": json.dumps({k: v for k, v in outputs.items() if k != "failed"})})
    echo_done("predict", run, f"{len(summary.written)} label file(s) in {Path(cfg.out).resolve()}")
    return outputs


@click.command("predict")
@click.option("--model", required=True, help="models:/name@alias, models:/name/N, models:/<model_id> or runs:/<id>/model.")
@click.option("--input", "-i", "input", required=True, multiple=True,
              help="A folder of images or an image file; repeat, or separate with commas.")
@click.option("--out", "-o", required=True, help="Folder for the label files (one per image).")
@click.option("--suffix", default=".nii.gz", show_default=True, help=f"Label file ending: {', '.join(LABEL_ENDINGS)}.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--strict", type=click.BOOL, default=False, show_default=True,
              help="Stop at the first image that cannot be segmented (true/false).")
def predict(**o: Any) -> None:
    """Segment raw images with a registered U-Net: one label file per image, on its own grid."""
    from iac.eval.batch_predict import PredictInputError

    setup_logging()
    inputs = tuple(Path(p.strip()) for item in o["input"] for p in item.split(",") if optional(p))
    if not inputs:
        raise click.BadParameter("give a folder of images or image files", param_hint="--input")
    cfg = build_config(PredictConfig, model=o["model"], inputs=inputs, out=Path(o["out"]), suffix=o["suffix"],
                       device=o["device"], strict=o["strict"])
    try:
        run_predict(cfg)
    except PredictInputError as e:
        raise click.BadParameter(str(e), param_hint="--input") from e
    except (ValueError, RuntimeError) as e:
        raise click.ClickException(str(e)) from e
