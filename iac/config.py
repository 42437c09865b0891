"""Settings of every pipeline step, in one place.

Each step's settings are a frozen dataclass whose defaults are documented next
to the field. Entry points parse their command line once, build one of these
and hand it to the core code; nothing below the entry points reads the
command line or the environment. Settings the paper does not pin down are
listed with their reasons in ``docs/deviations.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Datasets ``prepare`` knows how to read (``phantom`` is generated).
DATASETS = ("phantom", "acdc", "brats", "kits", "amos", "nnunet")
# Skip modules a U-Net can carry in its skip connections.
SKIPS = ("identity", "attention", "residual", "dense", "iac")
# DARTS-standard candidate operations, in their canonical order (ties in
# discretisation and pruning break by this order).
DARTS_OPS = (
    "none",
    "skip_connect",
    "max_pool_3x3",
    "avg_pool_3x3",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Flat, JSON-friendly view of a config (paths as strings, tuples as lists)."""

    def conv(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        if dataclasses.is_dataclass(v):
            return to_dict(v)
        return v

    return {f.name: conv(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


@dataclass(frozen=True)
class PrepareConfig:
    """Settings of ``prepare``: raw dataset folder -> prepared slice store."""

    dataset: str = "phantom"  # one of DATASETS
    source: Path | None = None  # raw folder as distributed; unused for phantom
    out: Path = Path("data/prepared/phantom")  # prepared folder (written atomically)
    spacing: float | None = None  # target in-plane spacing in mm; None = median of the cases
    slice_size: int | None = None  # square slice side in pixels; None = derived from the data
    size_multiple: int = 16  # derived slice sizes are rounded up to this (2**depth of the nets)
    split_seed: int = 0  # seed of the patient-level split
    val_fraction: float = 0.15  # share of patients in `val`
    test_fraction: float = 0.30  # share of patients in `test`
    split_file: Path | None = None  # JSON {"train": [...], "val": [...], "test": [...]} overriding the split
    modalities: tuple[str, ...] | None = None  # channel subset by name (BraTS: flair,t1,t1ce,t2); None = all
    amos_modality: str = "ct"  # AMOS22: "ct" (ids <= 500), "mri" (ids > 500) or "all"
    kits_version: str = "auto"  # KiTS: "19", "23" or "auto" (detected from the folder, see docs/datasets.md)
    ct_clip: tuple[float, float] = (0.5, 99.5)  # CT: foreground percentiles to clip to (nnU-Net)
    ct_samples_per_case: int = 10000  # CT: foreground voxels sampled per training case for the statistics
    workers: int = 2  # parallel worker processes (one patient each)
    skip_bad: bool = False  # skip invalid cases and list them in bad_cases.json instead of failing
    overwrite: bool = False  # replace an existing `out` prepared with other inputs/parameters
    phantom_patients: int = 34  # phantom cohort size (>= 16 train and >= 10 test with the default fractions)
    phantom_seed: int = 0  # seed of the phantom generator
    phantom_size: int = 64  # phantom in-plane matrix (pixels, before resampling)


@dataclass(frozen=True)
class BackboneConfig:
    """Which U-Net to build."""

    name: str = "unet"  # unet | resunet | basicunet (see iac.models.backbones)
    preset: str = "small"  # size preset (see iac.models.backbones.PRESETS)
    spatial_dims: int = 2
    features: tuple[int, ...] | None = None  # widths per level overriding the preset's; None = the preset's


@dataclass(frozen=True)
class TrainConfig:
    """Settings of ``retrain``: train a U-Net with a given skip module."""

    data: Path = Path("data/prepared/phantom")
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    skip: str = "identity"  # one of SKIPS
    genotype: str | None = None  # models:/ URI or path to genotype.json (skip=iac)
    epochs: int = 30
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 1e-4  # AdamW weight decay
    lr_schedule: str = "cosine"  # cosine | constant
    batch_size: int = 16
    seed: int = 0
    augment: bool = False  # MONAI spatial + intensity augmentation on training slices
    pretrained: str | None = None  # registered U-Net (models:/...) to start from
    resume: str | None = None  # run id whose last checkpoint to continue
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision (CUDA only; ignored on CPU)
    channels_last: bool = True  # channels-last memory format (CUDA only)
    num_workers: int = 0  # DataLoader workers (0: the store is memory-mapped and fast)
    val_every: int = 1  # validate every N epochs (patient-level Dice)
    max_slices_per_epoch: int | None = None  # cap on slices per epoch (None: all)
    dice_weight: float = 1.0  # weight of the Dice term in the Dice + cross-entropy loss
    ce_weight: float = 1.0  # weight of the cross-entropy term
    min_lr: float = 0.0  # final learning rate of the cosine schedule


@dataclass(frozen=True)
class EvalConfig:
    """Settings of ``evaluate``."""

    model: str = ""  # models:/name@alias, models:/name/N or runs:/id/path
    data: Path = Path("data/prepared/phantom")
    split: str = "test"  # train | val | test
    empty_policy: str = "dice1_hd0"  # both empty: Dice 1, HD95 0; one empty: Dice 0, HD95 = diagonal
    save_predictions: bool = False  # also write NIfTI predictions on each patient's original grid
    batch_size: int = 32
    device: str = "auto"


@dataclass(frozen=True)
class SearchConfig:
    """Settings shared by ``search_full`` and ``search_lth``."""

    data: Path = Path("data/prepared/phantom")
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    epochs: int = 200  # the paper's full-search budget
    pretrained: str | None = None  # registered baseline U-Net; None = train one first
    freeze_backbone: bool = True  # frozen modules stay in eval mode
    warmup_epochs: int = 15  # weight-only epochs before architecture steps (clamped to epochs // 2)
    w_lr: float = 3e-3  # cell weight learning rate (AdamW)
    w_weight_decay: float = 1e-4
    arch_lr: float = 6e-4  # PC-DARTS architecture Adam
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    batch_size: int = 16
    ops: tuple[str, ...] = DARTS_OPS
    nodes: int = 4  # intermediate nodes per cell
    k: int = 4  # PC-DARTS partial-channel ratio
    cell_channels: int = 16  # cell width C (inputs are projected to it)
    cell_inputs: str = "skip+up"  # "skip+up" (skip feature and decoder feature) or "skip"
    per_level: bool = False  # one architecture per skip level instead of one shared genotype
    steps_per_node: int = 2  # incoming edges kept per node at discretisation
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    resume: str | None = None
    max_slices_per_epoch: int | None = None


@dataclass(frozen=True)
class StabilityConfig:
    """IAC-LTH stability test and progressive pruning (``search_lth``)."""

    tau: float = 1e-4  # JS divergence (base 2) threshold: ~60 % of the full-speed divergence at the defaults (1.6e-4)
    patience: int = 2  # consecutive stable checks required
    window: int = 1  # compare with the distribution `window` checks earlier
    check_every: int = 50  # architecture steps between two checks (not epochs)
    smoothing: float = 0.0  # EMA factor on the distributions (0 = none)
    keep_schedule: tuple[int, ...] = (3, 2, 1)  # top-k kept at successive stabilities


@dataclass(frozen=True)
class StatsConfig:
    """Settings of ``stats``: patient-level paired comparisons of evaluate runs."""

    reference: str = "iac-lth"  # method every other method is compared with
    metrics: tuple[str, ...] = ("dice", "hd95")  # per-case columns tested (each its own Holm family)
    alpha: float = 0.05  # level of the Holm-corrected tests and of each one-sided TOST test
    margin: float = 0.01  # equivalence margin on the Dice scale [0, 1]
    hd95_margin: float | None = None  # equivalence margin for HD95 in mm; None = no TOST on HD95
    min_pairs: int = 10  # fewest patients a comparison may rest on (exact p >= 2 / 2**n)
    zero_method: str = "zsplit"  # scipy wilcoxon zero handling: zero differences keep their patient
    exact_max_n: int = 50  # exact signed-rank p up to this many pairs (no ties, no zeros)
    n_boot: int = 10000  # bootstrap resamples of the median paired difference
    ci_level: float = 0.95  # percentile bootstrap interval level
    bootstrap_seed: int = 0  # every comparison's bootstrap starts from this seed
    average_frames: bool = True  # ACDC: mean of the frames per patient; False = one analysis per frame


@dataclass(frozen=True)
class Budget:
    """Epoch budgets of one whole study (``main``).

    Every compared U-Net gets the same total training: the baseline's
    ``baseline_epochs`` plus ``extra_epochs`` more from the baseline's weights
    (the plain U-Net continued, each skip baseline, and each implanted cell).
    """

    baseline_epochs: int  # plain U-Net trained from scratch (the pre-trained network)
    extra_epochs: int  # further epochs of every variant started from the baseline
    search_epochs: int  # full search budget (LTH stops at most here)
    warmup_epochs: int  # search warm-up before architecture steps
    stability: StabilityConfig  # LTH criterion for this budget
    max_slices_per_epoch: int | None = None  # cap on slices per epoch (None: all)
    phantom_patients: int = 34  # cohort size when dataset=phantom
    phantom_size: int = 64  # phantom in-plane matrix
    min_pairs: int = 10  # stats: fewest paired patients


# Named budgets of ``main``. `quick` fits a 2-core CPU in about 15 minutes and
# is a smoke-sized study; `smoke` runs in the test suite; `paper` is the
# paper's 200-epoch full search (GPU hosts).
BUDGETS: dict[str, Budget] = {
    "smoke": Budget(
        baseline_epochs=1,
        extra_epochs=1,
        search_epochs=3,
        warmup_epochs=1,
        stability=StabilityConfig(tau=0.05, patience=1, window=1, check_every=1),
        max_slices_per_epoch=16,
        phantom_patients=34,
        phantom_size=32,
    ),
    "quick": Budget(
        baseline_epochs=12,
        extra_epochs=5,
        search_epochs=20,
        warmup_epochs=4,
        # ~13 architecture steps per epoch here: a check every 10 steps; tau at
        # ~75 % of the full-speed divergence for that cadence (6.5e-6); one
        # stable check suffices (replayed on a quick full search: stops at epoch 12 of 20).
        stability=StabilityConfig(tau=5e-6, patience=1, window=1, check_every=10),
        max_slices_per_epoch=None,
        phantom_patients=34,
        phantom_size=32,
    ),
    "paper": Budget(
        baseline_epochs=200,
        extra_epochs=100,
        search_epochs=200,
        warmup_epochs=15,
        stability=StabilityConfig(),
    ),
}


@dataclass(frozen=True)
class MainConfig:
    """Settings of ``main``: the whole study for one dataset."""

    dataset: str = "phantom"
    source: Path | None = None  # raw folder (not for phantom)
    data: Path | None = None  # prepared folder; None = data/prepared/<dataset>
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    budget: str = "quick"  # one of BUDGETS
    seeds: tuple[int, ...] = (0,)  # search seeds (repeated searches)
    baseline_epochs: int | None = None  # overrides of the budget, each None = the budget's
    extra_epochs: int | None = None
    search_epochs: int | None = None
    warmup_epochs: int | None = None
    tau: float | None = None
    patience: int | None = None
    window: int | None = None
    check_every: int | None = None
    skips: tuple[str, ...] = ("attention", "residual", "dense")  # skip baselines trained
    device: str = "auto"
    report_dir: Path = Path("outputs")  # the study report is written below it (and logged)
