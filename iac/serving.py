"""A trained U-Net as an MLflow pyfunc model that loads without unpickling.

The registered model holds two artifacts: the weights as safetensors and a
JSON config (network architecture, label names, the prepared dataset's stored
preprocessing). ``iac/serving_model.py`` is the model-from-code file MLflow
executes on load; it only instantiates :class:`UNetPyfunc`.

``predict`` takes a raw volume with its geometry and returns the label map on
the input grid (class probabilities restored linearly, then argmax, as
``evaluate`` restores them):

- a NIfTI (or any SimpleITK-readable) path, or a list of paths, one per channel;
- a dict ``{"image": array (Z, Y, X) or (C, Z, Y, X), "spacing": (x, y, z)}``
  with optional ``origin`` and ``direction``;
- a pandas DataFrame with a ``path`` column (one prediction per row).
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


try:  # the pyfunc base class only where MLflow is installed
    import warnings

    import mlflow.pyfunc

    warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")

    class UNetPyfunc(mlflow.pyfunc.PythonModel):
        """Pyfunc wrapper: safetensors weights + JSON config, no pickle."""

        def load_context(self, context) -> None:
            with open(context.artifacts["config"]) as f:
                self.config = json.load(f)
            self.net = load_network(context.artifacts["weights"], self.config, device="cpu")

        def predict(self, context, model_input, params=None):
            import pandas as pd

            if isinstance(model_input, pd.DataFrame):
                if "path" not in model_input.columns:
                    raise ValueError("a DataFrame input needs a 'path' column")
                return [predict_raw(self.net, self.config, p) for p in model_input["path"]]
            return predict_raw(self.net, self.config, model_input)

except ImportError:  # pragma: no cover - mlflow is a hard dependency
    UNetPyfunc = None  # type: ignore[assignment]
