"""A trained U-Net as an MLflow pyfunc model that loads without unpickling.

The registered model holds two artifacts: the weights as safetensors and a
JSON config (network architecture, label names, the prepared dataset's stored
preprocessing). ``iac/serving_model.py`` is the model-from-code file MLflow
executes on load; it only instantiates :class:`UNetPyfunc`.

``predict`` takes a raw volume with its geometry and returns the label map on
the input grid (class probabilities restored linearly, then argmax, as
``evaluate`` restores them):

- the signed array form: a float32 array ``(Z, Y, X)`` (``(C, Z, Y, X)`` for a
  model with C > 1 channels) with params ``spacing`` ``(x, y, z)`` and,
  optionally, ``origin`` and ``direction``; this is the form the registered
  model's signature declares, so ``mlflow models predict`` and serving
  validate it;
- when the model object is called directly (not through the signature): a
  NIfTI (or any SimpleITK-readable) path, a list of paths (one per channel),
  a dict ``{"image": array, "spacing": (x, y, z)}``, or a pandas DataFrame
  with a ``path`` column.

Files go through :func:`segment_file`: it reads the image(s) as ``prepare``
does, calls the signed form and returns (or writes) the label map as an image
with the input's geometry.

The device is model config: ``mlflow.pyfunc.load_model(uri, model_config={"device": "cuda"})``
(``auto`` by default: CUDA when available).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

CONFIG_FORMAT = 1


def build_network(config: dict[str, Any]):
    """Rebuild the network described by a saved model config (no weights)."""
    from iac.models import create_backbone

    if config.get("format") != CONFIG_FORMAT:
        raise ValueError(
            f"model config format {config.get('format')!r} is not supported (expected {CONFIG_FORMAT})"
        )
    return create_backbone(**config["network"])


def load_network(weights: str | Path, config: dict[str, Any], device: str = "cpu"):
    """Network with weights from a safetensors file, on ``device`` (CPU works for GPU-trained weights)."""
    from safetensors.torch import load_file

    net = build_network(config)
    state = load_file(str(weights), device="cpu")
    net.load_state_dict(state)
    return net.to(device).eval()


def _to_images(model_input: Any) -> list:
    """Turn one pyfunc input into a list of SimpleITK images (one per channel).

    Files are read as ``prepare`` reads them (:func:`iac.data.io.read_image`:
    truncated files and NaN/Inf voxels are refused naming the file); arrays
    must be finite too.
    """
    import SimpleITK as sitk

    from iac.data.io import read_image

    if isinstance(model_input, (str, Path)):
        return [read_image(Path(model_input))]
    if isinstance(model_input, (list, tuple)) and model_input and isinstance(model_input[0], (str, Path)):
        return [read_image(Path(p)) for p in model_input]
    if isinstance(model_input, dict):
        if "image" not in model_input or "spacing" not in model_input:
            raise ValueError("a dict input needs keys 'image' (array (Z,Y,X) or (C,Z,Y,X)) and 'spacing' (x,y,z)")
        arr = np.asarray(model_input["image"], dtype=np.float32)
        chans = [arr] if arr.ndim == 3 else list(arr) if arr.ndim == 4 else None
        if chans is None:
            raise ValueError(f"'image' must be 3-D (Z,Y,X) or 4-D (C,Z,Y,X), got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"'image' holds {int((~np.isfinite(arr)).sum())} NaN/Inf voxels (expected finite values)")
        images = []
        for c in chans:
            img = sitk.GetImageFromArray(c)
            img.SetSpacing(tuple(float(s) for s in model_input["spacing"]))
            if "origin" in model_input:
                img.SetOrigin(tuple(float(s) for s in model_input["origin"]))
            if "direction" in model_input:
                img.SetDirection(tuple(float(s) for s in model_input["direction"]))
            images.append(img)
        return images
    raise ValueError(
        "unsupported input: give a NIfTI path, a list of paths (one per channel), "
        "or {'image': array, 'spacing': (x, y, z)}"
    )


def predict_raw(
    net, config: dict[str, Any], model_input: Any, device: str = "cpu", restore: str = "probabilities"
) -> np.ndarray:
    """Preprocess a raw volume as at training time, predict, and restore the input grid.

    ``restore`` is :func:`iac.eval.inference.predict_original_grid`'s: class
    probabilities resampled linearly then argmax (the default, as ``evaluate``
    scores), or the argmax by nearest neighbour (``"labels"``).
    """
    from iac.data.preprocess import preprocess_volume
    from iac.eval.inference import predict_original_grid

    images = _to_images(model_input)
    arr, geometry = preprocess_volume(images, config["preprocessing"])
    return predict_original_grid(net, arr, geometry, restore, device=device)


DEFAULT_SPACING = (1.0, 1.0, 1.0)
DEFAULT_ORIGIN = (0.0, 0.0, 0.0)
DEFAULT_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
# Side of the input example's slices beyond the network's slice size (any size works; small is fast).
_EXAMPLE_SLICES = 2


def signature_and_example(config: dict[str, Any]):
    """The signed array form of a U-Net model and a small input example.

    Input: float32 ``(-1, -1, -1)`` (``(C, -1, -1, -1)`` with C > 1 channels);
    params ``spacing``, ``origin`` (3 values each) and ``direction`` (9);
    output: the uint8 label map ``(-1, -1, -1)`` on the input grid.

    Returns:
        ``(ModelSignature, (example array, example params))``.
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    channels = int(config["network"].get("in_channels", 1))
    shape = (-1, -1, -1) if channels == 1 else (channels, -1, -1, -1)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), shape)]),
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1))]),
        params=ParamSchema([
            ParamSpec("spacing", "double", list(DEFAULT_SPACING), (-1,)),
            ParamSpec("origin", "double", list(DEFAULT_ORIGIN), (-1,)),
            ParamSpec("direction", "double", list(DEFAULT_DIRECTION), (-1,)),
        ]),
    )
    side = int(config["preprocessing"]["slice_size"])
    example = np.random.default_rng(0).normal(size=(_EXAMPLE_SLICES, side, side)).astype(np.float32)
    if channels > 1:
        example = np.stack([example] * channels)
    spacing = [*map(float, config["preprocessing"]["target_spacing"]), 1.0][:3]
    return signature, (example, {"spacing": spacing})


def _array_input(image: np.ndarray, params: dict[str, Any] | None) -> dict[str, Any]:
    """The signed form (array + geometry params) as :func:`predict_raw`'s dict input."""
    params = dict(params or {})
    geometry = {
        "spacing": params.get("spacing", DEFAULT_SPACING),
        "origin": params.get("origin", DEFAULT_ORIGIN),
        "direction": params.get("direction", DEFAULT_DIRECTION),
    }
    for key, n in (("spacing", 3), ("origin", 3), ("direction", 9)):
        if geometry[key] is None or len(geometry[key]) != n:
            raise ValueError(f"param {key!r} must hold {n} numbers, got {geometry[key]!r}")
    if any(float(s) <= 0 for s in geometry["spacing"]):
        raise ValueError(f"param 'spacing' must be positive (x, y, z) in mm, got {list(geometry['spacing'])}")
    return {"image": image, **geometry}


def read_volume(paths: str | Path | list) -> list:
    """Read one image file (3-D, or 4-D with channels last) or one file per channel as 3-D SimpleITK images.

    Raises:
        iac.data.layouts.base.DataError: naming the file when it is unreadable, truncated,
            holds NaN/Inf voxels or is not a scalar 2-D/3-D/4-D image.
    """
    from iac.data.io import load_channels
    from iac.data.layouts.base import CaseSource

    files = tuple(Path(p) for p in (paths if isinstance(paths, (list, tuple)) else [paths]))
    case = CaseSource(case_id=files[0].name, patient=files[0].name, frame=None, images=files, label=None,
                      channel_axis_4d=len(files) == 1)
    return load_channels(case)


def segment_file(model, paths: str | Path | list, out: str | Path | None = None):
    """Segment an image file (or one file per channel) with a loaded U-Net pyfunc model.

    The NIfTI helper of the signed form: reads the image as ``prepare`` does,
    calls ``model.predict(array, params={"spacing", "origin", "direction"})``
    and returns the label map as an image on the input's grid.

    Args:
        model: ``mlflow.pyfunc.load_model("models:/iac-unet-...")`` (anything with
            ``predict(data, params=...)``).
        paths: the image file, or a list of files (one per channel).
        out: where to write the label image (any SimpleITK format by suffix); None = do not write.

    Returns:
        The label map as a ``SimpleITK.Image`` (uint8) with the input's spacing, origin and direction.
    """
    import SimpleITK as sitk

    images = read_volume(paths)
    arrays = [sitk.GetArrayFromImage(img).astype(np.float32) for img in images]  # each (Z, Y, X)
    array = arrays[0] if len(arrays) == 1 else np.stack(arrays)  # (Z, Y, X) or (C, Z, Y, X)
    ref = images[0]
    params = {
        "spacing": [float(v) for v in ref.GetSpacing()],
        "origin": [float(v) for v in ref.GetOrigin()],
        "direction": [float(v) for v in ref.GetDirection()],
    }
    labels = np.asarray(model.predict(array, params=params), dtype=np.uint8)
    label_img = sitk.GetImageFromArray(labels)
    label_img.CopyInformation(ref)
    if out is not None:
        write_label(label_img, Path(out))
    return label_img


def write_label(image, out: Path) -> Path:
    """Write a label image atomically (a temporary file beside ``out`` with its suffix, then a rename)."""
    import os

    import SimpleITK as sitk

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{os.getpid()}-{out.name}")  # keeps the suffix SimpleITK picks the writer by
    try:
        sitk.WriteImage(image, str(tmp), True)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


try:  # the pyfunc base class only where MLflow is installed
    import warnings

    import mlflow.pyfunc

    warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")

    class UNetPyfunc(mlflow.pyfunc.PythonModel):
        """Pyfunc wrapper: safetensors weights + JSON config, no pickle.

        Model config ``device``: ``auto`` (default; CUDA when available),
        ``cpu``, ``cuda`` or ``cuda:N``.
        """

        def load_context(self, context) -> None:
            from iac.train.device import resolve_device

            with open(context.artifacts["config"]) as f:
                self.config = json.load(f)
            model_config = getattr(context, "model_config", None) or {}
            self.device = resolve_device(str(model_config.get("device", "auto")))
            self.net = load_network(context.artifacts["weights"], self.config, device=str(self.device))

        def predict(self, context, model_input, params=None):
            import pandas as pd

            device = str(getattr(self, "device", "cpu"))
            if isinstance(model_input, np.ndarray):
                return predict_raw(self.net, self.config, _array_input(model_input, params), device=device)
            if isinstance(model_input, pd.DataFrame):
                if "path" not in model_input.columns:
                    raise ValueError("a DataFrame input needs a 'path' column")
                return [predict_raw(self.net, self.config, p, device=device) for p in model_input["path"]]
            return predict_raw(self.net, self.config, model_input, device=device)

except ImportError:  # pragma: no cover - mlflow is a hard dependency
    UNetPyfunc = None  # type: ignore[assignment]
