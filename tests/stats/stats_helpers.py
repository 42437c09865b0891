"""Shared values and helpers of the comparison tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

BASE = np.random.default_rng(42).uniform(0.6, 0.9, 30)  # per-patient Dice of the reference


def one_row(results: pd.DataFrame, **where) -> pd.Series:
    """The one row of ``results`` whose columns equal ``where``."""
    mask = np.ones(len(results), bool)
    for k, v in where.items():
        mask &= results[k].to_numpy() == v
    assert mask.sum() == 1, f"{mask.sum()} rows match {where}"
    return results[mask].iloc[0]
