"""The budget of a study: a named preset with the per-setting overrides of ``main``."""

from __future__ import annotations

from dataclasses import replace

from iac.config import BUDGETS, Budget, MainConfig

# Overrides of the LTH stability settings, the epoch counts and the check cadence; None keeps the preset's value.
STABILITY_OVERRIDES = ("tau", "patience", "window")
SEARCH_OVERRIDES = ("baseline_epochs", "extra_epochs", "search_epochs", "warmup_epochs", "check_every")


def resolve_budget(cfg: MainConfig) -> Budget:
    """The named budget with every per-setting override applied.

    Raises:
        ValueError: ``cfg.budget`` is not one of :data:`iac.config.BUDGETS`.
    """
    if cfg.budget not in BUDGETS:
        raise ValueError(f"unknown budget {cfg.budget!r}; valid: {', '.join(BUDGETS)}")
    b = BUDGETS[cfg.budget]
    stab = replace(b.stability, **_given(cfg, STABILITY_OVERRIDES))
    return replace(b, stability=stab, **_given(cfg, SEARCH_OVERRIDES))


def _given(cfg: MainConfig, names: tuple[str, ...]) -> dict[str, object]:
    return {k: getattr(cfg, k) for k in names if getattr(cfg, k) is not None}
