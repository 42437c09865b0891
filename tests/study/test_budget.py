"""The study's budget: a named preset with per-setting overrides."""

from __future__ import annotations

from dataclasses import replace

import pytest

from iac.config import BUDGETS, MainConfig
from iac.study.budget import resolve_budget


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_without_overrides_the_preset_is_used(name):
    assert resolve_budget(MainConfig(budget=name)) == BUDGETS[name]


def test_each_override_replaces_only_its_setting():
    preset = BUDGETS["quick"]
    cfg = MainConfig(budget="quick", search_epochs=7, warmup_epochs=0, tau=0.3, window=4)
    got = resolve_budget(cfg)
    assert got == replace(
        preset, search_epochs=7, warmup_epochs=0, stability=replace(preset.stability, tau=0.3, window=4)
    )


def test_an_unknown_budget_names_the_valid_ones():
    with pytest.raises(ValueError, match="'fast'.*smoke.*quick.*paper"):
        resolve_budget(MainConfig(budget="fast"))
