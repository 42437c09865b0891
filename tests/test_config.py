"""Every settings dataclass validates itself: defaults construct, bad values raise.

Each ill case names the field the error must blame and a piece of the message
that says what would be valid (the valid names, the allowed range or the rule).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click
import pytest

from iac.commands.common import build_config
from iac.config import (
    BUDGET_NAMES,
    BUDGETS,
    DARTS_OPS,
    BackboneConfig,
    Budget,
    ConfigError,
    EvalConfig,
    MainConfig,
    PrepareConfig,
    SearchConfig,
    StabilityConfig,
    StatsConfig,
    TrainConfig,
    check_fraction,
    check_one_of,
    check_positive,
    to_dict,
)

CONFIGS = [
    PrepareConfig, BackboneConfig, TrainConfig, EvalConfig, SearchConfig, StabilityConfig, StatsConfig, MainConfig,
]

NAN, INF = float("nan"), float("inf")
POSITIVE = "must be > 0"
NON_NEGATIVE = "must be >= 0"
FRACTION = "must be in [0, 1)"
OPEN_FRACTION = "must be in (0, 1)"
MODEL_URI = "is not a model URI (models:/name/N, models:/name@alias, models:/<model_id> or runs:/<run id>/model)"
RAW_FOLDER = "needs the raw dataset folder"

# [config class, kwargs, field the error names, text of the message saying what is valid].
ILL_CASES = [
    # PrepareConfig: names, the raw folder, positive sizes, fractions and their sum, clip percentiles.
    [PrepareConfig, {"dataset": "acdcc"}, "dataset",
     "is not one of phantom, acdc, brats, kits, amos, nnunet — did you mean 'acdc'?"],
    [PrepareConfig, {"dataset": "acdc"}, "source", RAW_FOLDER],
    [PrepareConfig, {"dataset": "brats", "source": ""}, "source", RAW_FOLDER],
    [PrepareConfig, {"spacing": 0.0}, "spacing", POSITIVE],
    [PrepareConfig, {"spacing": NAN}, "spacing", POSITIVE],
    [PrepareConfig, {"slice_size": -16}, "slice_size", POSITIVE],
    [PrepareConfig, {"size_multiple": 0}, "size_multiple", POSITIVE],
    [PrepareConfig, {"ct_samples_per_case": 0}, "ct_samples_per_case", POSITIVE],
    [PrepareConfig, {"workers": 0}, "workers", POSITIVE],
    [PrepareConfig, {"workers": True}, "workers", POSITIVE],
    [PrepareConfig, {"phantom_patients": -1}, "phantom_patients", POSITIVE],
    [PrepareConfig, {"phantom_size": 0}, "phantom_size", POSITIVE],
    [PrepareConfig, {"val_fraction": 1.0}, "val_fraction", FRACTION],
    [PrepareConfig, {"test_fraction": -0.1}, "test_fraction", FRACTION],
    [PrepareConfig, {"test_fraction": NAN}, "test_fraction", FRACTION],
    [PrepareConfig, {"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction", "leave no training patients"],
    [PrepareConfig, {"val_fraction": 0.3, "test_fraction": 0.9}, "val_fraction", "leave no training patients"],
    [PrepareConfig, {"amos_modality": "mr"}, "amos_modality", "is not one of ct, mri, all"],
    [PrepareConfig, {"kits_version": "21"}, "kits_version", "is not one of auto, 19, 23"],
    [PrepareConfig, {"modalities": ("flair", "t1", "FLAIR")}, "modalities", "a modality is listed twice"],
    [PrepareConfig, {"ct_clip": (99.5, 0.5)}, "ct_clip", "must be percentiles 0 <= low < high <= 100"],
    [PrepareConfig, {"ct_clip": (0.0, 100.5)}, "ct_clip", "must be percentiles 0 <= low < high <= 100"],
    [PrepareConfig, {"ct_clip": (-1.0, 99.0)}, "ct_clip", "must be percentiles 0 <= low < high <= 100"],
    # BackboneConfig: the name is the --backbone option.
    [BackboneConfig, {"name": "unett"}, "backbone", "is not one of unet, resunet, basicunet — did you mean 'unet'?"],
    [BackboneConfig, {"preset": "huge"}, "preset", "is not one of small, base, wide"],
    [BackboneConfig, {"spatial_dims": 3}, "spatial_dims", "is not one of 2"],
    [BackboneConfig, {"features": (8,)}, "features", "needs two or more positive widths"],
    [BackboneConfig, {"features": (8, 0, 16)}, "features", "needs two or more positive widths"],
    # TrainConfig: skip names, skip=iac needs a genotype, positive / non-negative numbers, loss weights, URIs.
    [TrainConfig, {"skip": "atention"}, "skip",
     "is not one of identity, attention, residual, dense, iac — did you mean 'attention'?"],
    [TrainConfig, {"skip": "iac"}, "genotype", "skip=iac needs a genotype"],
    [TrainConfig, {"skip": "iac", "genotype": ""}, "genotype", "skip=iac needs a genotype"],
    [TrainConfig, {"epochs": 0}, "epochs", POSITIVE],
    [TrainConfig, {"lr": -1e-3}, "lr", POSITIVE],
    [TrainConfig, {"lr": INF}, "lr", POSITIVE],
    [TrainConfig, {"batch_size": 0}, "batch_size", POSITIVE],
    [TrainConfig, {"val_every": 0}, "val_every", POSITIVE],
    [TrainConfig, {"weight_decay": -1e-4}, "weight_decay", NON_NEGATIVE],
    [TrainConfig, {"min_lr": -1e-6}, "min_lr", NON_NEGATIVE],
    [TrainConfig, {"skip": "iac", "genotype": "g.json", "implant_lr_scale": 0.0}, "implant_lr_scale", POSITIVE],
    [TrainConfig, {"implant_lr_scale": 10.0}, "implant_lr_scale", "is only used with skip=iac"],
    [TrainConfig, {"num_workers": -1}, "num_workers", NON_NEGATIVE],
    [TrainConfig, {"ce_weight": -1.0}, "ce_weight", NON_NEGATIVE],
    [TrainConfig, {"dice_weight": 0.0, "ce_weight": 0.0}, "dice_weight", "cannot both be 0"],
    [TrainConfig, {"max_slices_per_epoch": 0}, "max_slices_per_epoch", POSITIVE],
    [TrainConfig, {"lr_schedule": "cosin"}, "lr_schedule", "is not one of cosine, constant — did you mean 'cosine'?"],
    [TrainConfig, {"pretrained": "outputs/unet.pt"}, "pretrained", MODEL_URI],
    # EvalConfig
    [EvalConfig, {"model": "unet-baseline"}, "model", MODEL_URI],
    [EvalConfig, {"model": "models/unet/1"}, "model", MODEL_URI],
    [EvalConfig, {"split": "tst"}, "split", "is not one of train, val, test — did you mean 'test'?"],
    [EvalConfig, {"empty_policy": "dice1"}, "empty_policy", "is not one of dice1_hd0, nan"],
    [EvalConfig, {"batch_size": 0}, "batch_size", POSITIVE],
    [EvalConfig, {"restore": "nearest"}, "restore", "is not one of probabilities, labels"],
    [EvalConfig, {"nsd_tolerance_mm": 0.0}, "nsd_tolerance_mm", POSITIVE],
    [EvalConfig, {"nsd_tolerance_mm": NAN}, "nsd_tolerance_mm", POSITIVE],
    [EvalConfig, {"nsd_class_tolerance_mm": (("LV", -1.0),)}, "nsd_class_tolerance_mm", POSITIVE],
    [EvalConfig, {"nsd_class_tolerance_mm": (("LV", 1.0), ("LV", 2.0))}, "nsd_class_tolerance_mm",
     "must be distinct (class or region name, mm) pairs"],
    [EvalConfig, {"nsd_class_tolerance_mm": (("", 1.0),)}, "nsd_class_tolerance_mm",
     "must be distinct (class or region name, mm) pairs"],
    # SearchConfig: operation names, duplicates, 'none' alone, positive numbers, betas, cell inputs, URIs.
    [SearchConfig, {"ops": ("sep_conv3x3",)}, "ops", "did you mean 'sep_conv_3x3'?"],
    [SearchConfig, {"ops": ("none", "skip_connect", "none")}, "ops", "an operation is listed twice"],
    [SearchConfig, {"ops": ("none",)}, "ops", "needs at least one operation other than 'none'"],
    [SearchConfig, {"ops": ()}, "ops", "needs at least one operation other than 'none'"],
    [SearchConfig, {"epochs": 0}, "epochs", POSITIVE],
    [SearchConfig, {"w_lr": -1.0}, "w_lr", POSITIVE],
    [SearchConfig, {"arch_lr": 0.0}, "arch_lr", POSITIVE],
    [SearchConfig, {"batch_size": 0}, "batch_size", POSITIVE],
    [SearchConfig, {"nodes": 0}, "nodes", POSITIVE],
    [SearchConfig, {"k": 0}, "k", POSITIVE],
    [SearchConfig, {"cell_channels": -16}, "cell_channels", POSITIVE],
    [SearchConfig, {"steps_per_node": 0}, "steps_per_node", POSITIVE],
    [SearchConfig, {"check_every": 0}, "check_every", POSITIVE],
    [SearchConfig, {"warmup_epochs": -1}, "warmup_epochs", NON_NEGATIVE],
    [SearchConfig, {"w_weight_decay": -1e-4}, "w_weight_decay", NON_NEGATIVE],
    [SearchConfig, {"arch_weight_decay": NAN}, "arch_weight_decay", NON_NEGATIVE],
    [SearchConfig, {"max_slices_per_epoch": -5}, "max_slices_per_epoch", POSITIVE],
    [SearchConfig, {"arch_betas": (0.5,)}, "arch_betas", "must be two values in [0, 1)"],
    [SearchConfig, {"arch_betas": (0.5, 1.0)}, "arch_betas", "must be two values in [0, 1)"],
    [SearchConfig, {"arch_betas": (-0.1, 0.999)}, "arch_betas", "must be two values in [0, 1)"],
    [SearchConfig, {"cell_inputs": "up"}, "cell_inputs", "is not one of skip+up, skip"],
    [SearchConfig, {"pretrained": "unet@champion"}, "pretrained", MODEL_URI],
    # StabilityConfig: positive tau / counts, smoothing a fraction, keep_schedule strictly decreasing.
    [StabilityConfig, {"tau": 0.0}, "tau", POSITIVE],
    [StabilityConfig, {"tau": -1e-4}, "tau", POSITIVE],
    [StabilityConfig, {"patience": 0}, "patience", POSITIVE],
    [StabilityConfig, {"window": 0}, "window", POSITIVE],
    [StabilityConfig, {"smoothing": 1.0}, "smoothing", FRACTION],
    [StabilityConfig, {"smoothing": -0.1}, "smoothing", FRACTION],
    [StabilityConfig, {"keep_schedule": (1, 2, 3)}, "keep_schedule", "must be strictly decreasing positive integers"],
    [StabilityConfig, {"keep_schedule": (3, 3, 1)}, "keep_schedule", "must be strictly decreasing positive integers"],
    [StabilityConfig, {"keep_schedule": (3, 2, 0)}, "keep_schedule", "must be strictly decreasing positive integers"],
    [StabilityConfig, {"keep_schedule": ()}, "keep_schedule", "must be strictly decreasing positive integers"],
    # StabilityConfig, criterion: a known name; error levels in (0, 1); a positive effect.
    [StabilityConfig, {"criterion": "sequental"}, "criterion", "is not one of js, sequential — did you mean 'sequential'?"],
    [StabilityConfig, {"seq_error": 0.0}, "seq_error", OPEN_FRACTION],
    [StabilityConfig, {"seq_error": 1.0}, "seq_error", OPEN_FRACTION],
    [StabilityConfig, {"seq_error": NAN}, "seq_error", OPEN_FRACTION],
    [StabilityConfig, {"seq_effect": 0.0}, "seq_effect", POSITIVE],
    [StabilityConfig, {"seq_effect": INF}, "seq_effect", POSITIVE],
    [StabilityConfig, {"seq_miss": 0.0}, "seq_miss", OPEN_FRACTION],
    [StabilityConfig, {"seq_miss": 1.5}, "seq_miss", OPEN_FRACTION],
    # StatsConfig: metric names, open fractions, positive margins and counts, zero method.
    [StatsConfig, {"metrics": ("dice", "hd99")}, "metrics", "is not one of dice, hd95, nsd — did you mean 'hd95'?"],
    [StatsConfig, {"alpha": 0.0}, "alpha", OPEN_FRACTION],
    [StatsConfig, {"alpha": 1.0}, "alpha", OPEN_FRACTION],
    [StatsConfig, {"alpha": "0.05"}, "alpha", OPEN_FRACTION],
    [StatsConfig, {"ci_level": 95.0}, "ci_level", OPEN_FRACTION],
    [StatsConfig, {"margin": 0.0}, "margin", POSITIVE],
    [StatsConfig, {"hd95_margin": -1.0}, "hd95_margin", POSITIVE],
    [StatsConfig, {"nsd_margin": 0.0}, "nsd_margin", POSITIVE],
    [StatsConfig, {"ni_margin": -0.01}, "ni_margin", POSITIVE],
    [StatsConfig, {"hd95_ni_margin": INF}, "hd95_ni_margin", POSITIVE],
    [StatsConfig, {"nsd_ni_margin": 0.0}, "nsd_ni_margin", POSITIVE],
    [StatsConfig, {"min_pairs": 0}, "min_pairs", POSITIVE],
    [StatsConfig, {"exact_max_n": 0}, "exact_max_n", POSITIVE],
    [StatsConfig, {"n_boot": -1}, "n_boot", POSITIVE],
    [StatsConfig, {"zero_method": "zsplitt"}, "zero_method",
     "is not one of zsplit, wilcox, pratt — did you mean 'zsplit'?"],
    # MainConfig: names, a real dataset needs its source, seeds, skip baselines, budget overrides.
    [MainConfig, {"dataset": "phantm"}, "dataset", "did you mean 'phantom'?"],
    [MainConfig, {"dataset": "kits"}, "source", RAW_FOLDER],
    [MainConfig, {"budget": "papr"}, "budget", "is not one of smoke, quick, study, paper — did you mean 'paper'?"],
    [MainConfig, {"seeds": ()}, "seeds", "give at least one seed"],
    [MainConfig, {"skips": ("attention", "identity")}, "skips", "is not one of attention, residual, dense"],
    [MainConfig, {"skips": ("iac",)}, "skips", "is not one of attention, residual, dense"],
    [MainConfig, {"baseline_epochs": 0}, "baseline_epochs", POSITIVE],
    [MainConfig, {"search_epochs": -3}, "search_epochs", POSITIVE],
    [MainConfig, {"tau": -1e-4}, "tau", POSITIVE],
    [MainConfig, {"patience": 0}, "patience", POSITIVE],
    [MainConfig, {"check_every": 0}, "check_every", POSITIVE],
    [MainConfig, {"warmup_epochs": -1}, "warmup_epochs", NON_NEGATIVE],
]

# Values on the edge of each rule that must construct: [config class, kwargs].
GOOD_CASES = [
    [PrepareConfig, {"dataset": "acdc", "source": Path("raw/acdc")}],
    [PrepareConfig, {"val_fraction": 0.0, "test_fraction": 0.99, "spacing": 1.5, "slice_size": 224}],
    [PrepareConfig, {"modalities": ("flair", "t1ce"), "ct_clip": (0.0, 100.0), "amos_modality": "all",
                     "kits_version": "19"}],
    [BackboneConfig, {"name": "basicunet", "preset": "wide", "features": (4, 8)}],
    [TrainConfig, {"skip": "iac", "genotype": "models:/iac-cell-phantom/1"}],
    [TrainConfig, {"weight_decay": 0.0, "num_workers": 0, "dice_weight": 0.0, "lr_schedule": "constant"}],
    [TrainConfig, {"pretrained": "runs:/abc123/model", "max_slices_per_epoch": 8}],
    [EvalConfig, {"model": "models:/unet@champion", "split": "val", "empty_policy": "nan"}],
    [EvalConfig, {"restore": "labels", "nsd_tolerance_mm": 0.5, "nsd_class_tolerance_mm": (("LV", 1.0), ("RV", 3.0))}],
    [SearchConfig, {"ops": ("none", "skip_connect"), "warmup_epochs": 0, "arch_betas": (0.0, 0.5)}],
    [SearchConfig, {"ops": ("sep_conv_5x5",), "cell_inputs": "skip", "pretrained": "models:/unet/3"}],
    [StabilityConfig, {"smoothing": 0.0, "keep_schedule": (1,)}],
    [StabilityConfig, {"keep_schedule": (7, 4, 2, 1), "smoothing": 0.9}],
    [StatsConfig, {"metrics": ("hd95",), "hd95_margin": 1.0, "zero_method": "pratt"}],
    [StatsConfig, {"metrics": ("nsd",), "nsd_margin": 0.02, "ni_margin": 0.01, "hd95_ni_margin": 1.0, "nsd_ni_margin": 0.02}],
    [MainConfig, {"dataset": "amos", "source": Path("raw/amos"), "budget": "paper", "seeds": (0, 1, 2)}],
    [MainConfig, {"skips": ("dense",), "warmup_epochs": 0, "tau": 1e-5}],
]


def _ids(cases):
    return [f"{case[0].__name__}-{'-'.join(map(str, case[1])) or 'empty'}-{i}" for i, case in enumerate(cases)]


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_defaults_construct(cls):
    cfg = cls()
    assert dataclasses.is_dataclass(cfg)
    json.dumps(to_dict(cfg))  # flat view is JSON-able (paths, tuples, nested configs)


@pytest.mark.parametrize("cls, kwargs", GOOD_CASES, ids=_ids(GOOD_CASES))
def test_edge_values_construct(cls, kwargs):
    cfg = cls(**kwargs)
    for name, value in kwargs.items():
        assert getattr(cfg, name) == value


@pytest.mark.parametrize("cls, kwargs, field, valid", ILL_CASES, ids=_ids(ILL_CASES))
def test_ill_cases(cls, kwargs, field, valid):
    with pytest.raises(ConfigError) as info:
        cls(**kwargs)
    err = info.value
    assert err.field == field
    assert valid in err.reason
    assert str(err) == f"{field}: {err.reason}"
    assert isinstance(err, ValueError)  # callers catching ValueError still see it


@pytest.mark.parametrize("cls, kwargs, field, valid", ILL_CASES, ids=_ids(ILL_CASES))
def test_replace_validates(cls, kwargs, field, valid):
    """`dataclasses.replace` goes through __init__, so a frozen config cannot be made bad."""
    with pytest.raises(ConfigError) as info:
        dataclasses.replace(cls(), **kwargs)
    assert info.value.field == field


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_frozen(cls):
    cfg = cls()
    name = dataclasses.fields(cfg)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(cfg, name, getattr(cfg, name))


def test_replace_checks_cross_field_rules():
    cfg = TrainConfig(skip="iac", genotype="models:/iac-cell-phantom/1")
    with pytest.raises(ConfigError, match="genotype: skip=iac needs a genotype"):
        dataclasses.replace(cfg, genotype=None)
    prep = PrepareConfig(val_fraction=0.2, test_fraction=0.3)
    assert dataclasses.replace(prep, test_fraction=0.79).test_fraction == 0.79
    with pytest.raises(ConfigError, match="leave no training patients"):
        dataclasses.replace(prep, test_fraction=0.8)
    main = MainConfig(dataset="acdc", source=Path("raw/acdc"))
    with pytest.raises(ConfigError) as info:
        dataclasses.replace(main, source=None)
    assert info.value.field == "source"


@pytest.mark.parametrize(
    "make, field, suggestion",
    [
        [lambda: SearchConfig(ops=("sep_conv3x3",)), "ops", "sep_conv_3x3"],
        [lambda: SearchConfig(ops=("none", "dil_conv3x3")), "ops", "dil_conv_3x3"],
        [lambda: BackboneConfig(name="unett"), "backbone", "unet"],
        [lambda: BackboneConfig(name="resunett"), "backbone", "resunet"],
        [lambda: BackboneConfig(preset="smal"), "preset", "small"],
        [lambda: TrainConfig(skip="residul"), "skip", "residual"],
        [lambda: MainConfig(budget="quik"), "budget", "quick"],
        [lambda: MainConfig(skips=("atention",)), "skips", "attention"],
        [lambda: PrepareConfig(dataset="bratz", source=Path("raw")), "dataset", "brats"],
        [lambda: StatsConfig(zero_method="wilcoxon"), "zero_method", "wilcox"],
    ],
)
def test_did_you_mean(make, field, suggestion):
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.field == field
    assert info.value.reason.endswith(f"did you mean {suggestion!r}?")


def test_no_suggestion_for_far_names():
    with pytest.raises(ConfigError) as info:
        SearchConfig(ops=("transformer",))
    assert "did you mean" not in info.value.reason
    assert ", ".join(DARTS_OPS) in info.value.reason  # still lists what is valid


def test_helpers():
    assert check_one_of("split", "val", ("train", "val", "test")) == "val"
    check_positive("lr", 1e-3)
    check_positive("warmup", 0, allow_zero=True)
    check_positive("cap", None, optional=True)
    check_fraction("alpha", 0.5, closed_low=False)
    check_fraction("smoothing", 0.0)
    for bad in [lambda: check_positive("cap", None), lambda: check_positive("n", False, allow_zero=True),
                lambda: check_positive("n", "3"), lambda: check_fraction("alpha", 0.0, closed_low=False),
                lambda: check_fraction("alpha", None), lambda: check_fraction("alpha", True)]:
        with pytest.raises(ConfigError):
            bad()


def test_build_config_returns_the_config():
    cfg = build_config(SearchConfig, w_lr=1e-2, nodes=3)
    assert isinstance(cfg, SearchConfig) and (cfg.w_lr, cfg.nodes) == (1e-2, 3)


@pytest.mark.parametrize(
    "cls, kwargs, hint, text",
    [
        [SearchConfig, {"w_lr": -1}, "--w-lr", "must be > 0, got -1"],
        [BackboneConfig, {"name": "unett"}, "--backbone", "did you mean 'unet'?"],
        [PrepareConfig, {"val_fraction": 0.6, "test_fraction": 0.6}, "--val-fraction", "leave no training patients"],
        [StabilityConfig, {"keep_schedule": (1, 2)}, "--keep-schedule", "strictly decreasing"],
    ],
)
def test_build_config_usage_error(cls, kwargs, hint, text):
    with pytest.raises(click.BadParameter) as info:
        build_config(cls, **kwargs)
    err = info.value
    assert err.param_hint == hint
    assert text in err.message
    assert err.exit_code == 2  # a usage error
    assert isinstance(err.__cause__, ConfigError)
    assert err.format_message() == f"Invalid value for {hint}: {err.message}"


def test_budgets():
    assert tuple(BUDGETS) == BUDGET_NAMES
    for name, budget in BUDGETS.items():
        assert isinstance(budget, Budget)
        assert isinstance(budget.stability, StabilityConfig)
        for f in ("baseline_epochs", "extra_epochs", "search_epochs", "check_every", "phantom_patients",
                  "phantom_size", "min_pairs"):
            assert getattr(budget, f) > 0, f"{name}.{f}"
        assert 0 <= budget.warmup_epochs < budget.search_epochs, name
        assert MainConfig(budget=name).budget == name
