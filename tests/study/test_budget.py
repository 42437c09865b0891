"""The study's budget: a named preset with per-setting overrides."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from iac.config import BUDGETS, MainConfig, TrainConfig
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
    with pytest.raises(ValueError, match="'fast'.*smoke.*quick.*study.*paper"):
        resolve_budget(MainConfig(budget="fast"))


def test_the_study_budget_is_the_headline_benchmarks_frozen_design():
    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("lth_speedup_design", root / "benchmarks" / "lth_speedup.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    design, study = module.Design(), BUDGETS["study"]
    pairs = {"patients": "phantom_patients", "size": "phantom_size", "val_fraction": "phantom_val_fraction",
             "test_fraction": "phantom_test_fraction", "baseline_epochs": "baseline_epochs",
             "baseline_lr": "baseline_lr", "retrain_epochs": "extra_epochs", "retrain_lr": "extra_lr",
             "cell_channels": "cell_channels", "max_slices_per_epoch": "max_slices_per_epoch",
             "check_every": "check_every"}
    assert {f.name for f in dataclasses.fields(design)} - set(pairs) == {"backbone_preset", "retrain_seeds",
                                                                         "implant_lr_scale"}
    # not a budget setting: main's retrainings use TrainConfig's default, the frozen design's value
    assert design.implant_lr_scale == TrainConfig(skip="iac", genotype="g.json").implant_lr_scale
    for field, budget_field in pairs.items():
        assert getattr(study, budget_field) == getattr(design, field), field
    assert study.phantom_variant == "testbed" and study.search_epochs == 200  # the paper's full search
    assert BUDGETS["smoke"].phantom_variant == "classic" == BUDGETS["quick"].phantom_variant


def test_the_study_budget_reaches_the_steps(tmp_path):
    from iac.study.driver import StudySteps, _phantom_settings

    budget = BUDGETS["study"]
    cfg = MainConfig(data=tmp_path)
    steps = StudySteps(cfg, budget, cache=None, tags={}, data=tmp_path, fingerprint="f")
    assert steps.search_config(0, "models:/b/1").cell_channels == 8
    assert steps.search_config(0, "models:/b/1").max_slices_per_epoch == 160
    assert _phantom_settings(cfg, budget) == {"phantom_patients": 140, "phantom_size": 48, "phantom_variant": "testbed",
                                              "test_fraction": 0.74, "val_fraction": 0.06}
    assert steps.train_config("identity", 150, None, None, 0).lr == 3e-3  # the baseline
    assert steps.train_config("iac", 30, "models:/b/1", "models:/c/1", 0).lr == 1e-3  # every extra-epoch variant
    # quick leaves them at the configs' defaults
    assert StudySteps(cfg, BUDGETS["quick"], None, {}, tmp_path, "f").train_config("identity", 1, None, None, 0).lr == 1e-3
    assert StudySteps(cfg, BUDGETS["quick"], None, {}, tmp_path, "f").search_config(0, "models:/b/1").cell_channels == 16
