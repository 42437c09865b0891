"""Synthetic stacked per-case tables for the stats tests (fixtures)."""

from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
import pytest

from iac.config import StatsConfig

Scores = Callable[[int, str, int], float] | Sequence[float]


def patient_ids(n: int) -> list[str]:
    return [f"p{i:03d}" for i in range(n)]


def long_table(
    scores: dict[str, Scores],
    n: int = 12,
    labels: Sequence[str] = ("mean_fg",),
    frames: Sequence[str] = ("",),
    seeds: dict[str, Sequence[int]] | None = None,
    fingerprint: str = "fp0",
    policy: str = "dice1_hd0",
) -> pd.DataFrame:
    """One row per (method, seed, patient, frame, label).

    ``scores[method]`` is a list of per-patient Dice values (the same for
    every frame, label and seed) or ``f(patient_index, frame, seed) -> dice``.
    ``hd95 = 20 * (1 - dice)`` and ``nsd = (1 + dice) / 2`` so that a better
    Dice is also a better HD95 and NSD. ``fingerprint`` is the evaluated
    data's; each method was trained on data ``train-<method>``.
    """
    rows = []
    for method, values in scores.items():
        for seed in (seeds or {}).get(method, [0]):
            for i, patient in enumerate(patient_ids(n)):
                for frame in frames:
                    dice = values(i, frame, seed) if callable(values) else values[i]
                    for label in labels:
                        rows.append(
                            {
                                "patient": patient,
                                "frame": frame,
                                "label": label,
                                "dice": dice,
                                "hd95": 20 * (1 - dice),
                                "nsd": (1 + dice) / 2,
                                "ref_empty": False,
                                "pred_empty": False,
                                "method": method,
                                "seed": seed,
                                "dataset": "phantom",
                                "backbone": "unet",
                                "empty_policy": policy,
                                "eval_data_fingerprint": fingerprint,
                                "data_fingerprint": f"train-{method}",
                            }
                        )
    return pd.DataFrame(rows)


@pytest.fixture
def fast() -> StatsConfig:
    """The default settings with a short bootstrap."""
    return StatsConfig(n_boot=200)


@pytest.fixture
def make_table():
    """Factory of synthetic stacked per-case tables (see ``long_table``)."""
    return long_table


@pytest.fixture(autouse=True, scope="session")
def _frozen_heap():
    """Move the objects alive after the imports out of the collector's reach.

    statsmodels' Holm branch of ``multipletests`` runs a full ``gc.collect()``
    on every call, which walks every object torch, MONAI and pandas created
    (about half a second each time). Freezing them keeps the tests' code
    path unchanged and the collection short.
    """
    import gc

    gc.freeze()
    yield
    gc.unfreeze()
