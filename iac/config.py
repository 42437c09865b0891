"""Settings of every pipeline step, in one place.

Each step's settings are a frozen dataclass whose defaults are documented next
to the field, and which validates itself on construction: a bad value raises
:class:`ConfigError` naming the field, what would be valid and, for names,
the closest valid one. Entry points only parse their command line, build one
of these and hand it to the core code (they turn a :class:`ConfigError` into
a usage error for the matching option); nothing below the entry points reads
the command line or the environment. Settings the paper does not pin down are
listed with their reasons in ``docs/deviations.md``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

# Datasets ``prepare`` knows how to read (``phantom`` is generated).
DATASETS = ("phantom", "acdc", "brats", "kits", "amos", "nnunet")
# Generators behind dataset=phantom: the classic phantom and the harder, ACDC-like test bed (docs/datasets.md).
PHANTOM_VARIANTS = ("classic", "testbed")
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


# Budget presets of ``main`` (see BUDGETS at the end of the file).
BUDGET_NAMES = ("smoke", "quick", "study", "paper")
CELL_INPUTS = ("skip+up", "skip")
LR_SCHEDULES = ("cosine", "constant")
SPLIT_NAMES = ("train", "val", "test")
EMPTY_POLICIES = ("dice1_hd0", "nan")
# How evaluate puts predictions back on the original grid (iac.eval.inference.predict_original_grid).
RESTORE_METHODS = ("probabilities", "labels")
AMOS_MODALITIES = ("ct", "mri", "all")
KITS_VERSIONS = ("auto", "19", "23")
ZERO_METHODS = ("zsplit", "wilcox", "pratt")
W_OPTIMIZERS = ("adamw", "sgd")
STEP_ORDERS = ("weights_first", "arch_first")
ARCH_PRECISIONS = ("fp32", "bf16")
RECOMPUTE_BACKWARD = ("auto", "true", "false")  # SearchConfig.recompute_backward
STATS_METRICS = ("dice", "hd95", "nsd")
# How ``main`` runs its steps: in this process, or as tasks on a Ray cluster.
EXECUTORS = ("local", "ray")
# Normalised surface Dice tolerance tau in mm of a class or region without its own (EvalConfig).
DEFAULT_NSD_TOLERANCE_MM = 2.0


class ConfigError(ValueError):
    """A setting is invalid.

    Attributes:
        field: Name of the offending field (as in the dataclass and, with
            dashes, the command-line option).
    """

    def __init__(self, field: str, message: str) -> None:
        self.field, self.reason = field, message
        super().__init__(f"{field}: {message}")


def check_one_of(field: str, value: Any, valid: Sequence[Any]) -> Any:
    """Return ``value`` if it is in ``valid``, else raise with the closest valid name."""
    if value in valid:
        return value
    close = difflib.get_close_matches(str(value), [str(v) for v in valid], n=1)
    hint = f" — did you mean {close[0]!r}?" if close else ""
    raise ConfigError(field, f"{value!r} is not one of {', '.join(map(str, valid))}{hint}")


def check_positive(field: str, value: float | None, allow_zero: bool = False, optional: bool = False) -> None:
    """``value`` is a finite number > 0 (>= 0 with ``allow_zero``; None allowed with ``optional``)."""
    if value is None and optional:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(field, f"must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def check_fraction(field: str, value: float, closed_low: bool = True) -> None:
    """``value`` lies in [0, 1) (or (0, 1) when not ``closed_low``)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and (value >= 0 if closed_low else value > 0) and value < 1):
        raise ConfigError(field, f"must be in {'[' if closed_low else '('}0, 1), got {value!r}")


def _check_model_uri(field: str, value: str | None) -> None:
    if value and not str(value).startswith(("models:/", "runs:/")):
        raise ConfigError(
            field,
            f"{value!r} is not a model URI (models:/name/N, models:/name@alias, models:/<model_id> or runs:/<run id>/model)",
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
    phantom_variant: str = "classic"  # one of PHANTOM_VARIANTS: "classic" phantom or the ACDC-like "testbed"

    def __post_init__(self) -> None:
        check_one_of("dataset", self.dataset, DATASETS)
        if self.dataset != "phantom" and (self.source is None or str(self.source) == ""):
            raise ConfigError("source", f"dataset {self.dataset!r} needs the raw dataset folder")
        check_positive("spacing", self.spacing, optional=True)
        for name in ("slice_size", "size_multiple", "ct_samples_per_case", "workers", "phantom_patients", "phantom_size"):
            check_positive(name, getattr(self, name), optional=name == "slice_size")
        check_fraction("val_fraction", self.val_fraction)
        check_fraction("test_fraction", self.test_fraction)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError(
                "val_fraction",
                f"val + test fractions ({self.val_fraction} + {self.test_fraction}) leave no training patients",
            )
        check_one_of("amos_modality", self.amos_modality, AMOS_MODALITIES)
        check_one_of("kits_version", self.kits_version, KITS_VERSIONS)
        check_one_of("phantom_variant", self.phantom_variant, PHANTOM_VARIANTS)
        if self.phantom_variant == "testbed" and self.phantom_size < 16:
            raise ConfigError("phantom_size", f"the testbed needs a matrix of at least 16 pixels, got {self.phantom_size}")
        if self.modalities is not None and len({m.lower() for m in self.modalities}) != len(self.modalities):
            raise ConfigError("modalities", f"a modality is listed twice in {list(self.modalities)}")
        lo, hi = self.ct_clip
        if not 0 <= lo < hi <= 100:
            raise ConfigError("ct_clip", f"must be percentiles 0 <= low < high <= 100, got {self.ct_clip}")


@dataclass(frozen=True)
class BackboneConfig:
    """Which U-Net to build."""

    name: str = "unet"  # unet | resunet | basicunet (see iac.models.backbones)
    preset: str = "small"  # size preset (see iac.models.backbones.PRESETS)
    spatial_dims: int = 2
    features: tuple[int, ...] | None = None  # widths per level overriding the preset's; None = the preset's

    def __post_init__(self) -> None:
        from iac.models import BACKBONES, PRESETS

        check_one_of("backbone", self.name, tuple(BACKBONES))
        check_one_of("preset", self.preset, tuple(PRESETS[self.name]))
        check_one_of("spatial_dims", self.spatial_dims, (2,))
        if self.features is not None and (len(self.features) < 2 or any(f < 1 for f in self.features)):
            raise ConfigError("features", f"needs two or more positive widths, got {self.features}")


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
    deterministic: bool = False  # deterministic CUDA kernels, cuDNN autotuner off (CPU runs always are)
    num_workers: int = 0  # DataLoader workers (0: the store is memory-mapped and fast)
    val_every: int = 1  # validate every N epochs (patient-level Dice)
    max_slices_per_epoch: int | None = None  # cap on slices per epoch (None: all)
    dice_weight: float = 1.0  # weight of the Dice term in the Dice + cross-entropy loss
    ce_weight: float = 1.0  # weight of the cross-entropy term
    min_lr: float = 0.0  # final learning rate of the cosine schedule
    # learning-rate multiplier of the implanted cells and their output projections (skip=iac)
    implant_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        check_one_of("skip", self.skip, SKIPS)
        if self.skip == "iac" and not self.genotype:
            raise ConfigError("genotype", "skip=iac needs a genotype (models:/iac-cell-..., runs:/<id> or a genotype.json path)")
        if self.skip != "iac" and self.genotype:
            raise ConfigError("genotype", f"is only used with skip=iac (skip={self.skip})")
        if self.skip != "iac" and self.implant_lr_scale != 1.0:
            raise ConfigError("implant_lr_scale", f"is only used with skip=iac (skip={self.skip}); leave it at 1")
        for name in ("epochs", "lr", "batch_size", "val_every", "implant_lr_scale"):
            check_positive(name, getattr(self, name))
        for name in ("weight_decay", "min_lr", "num_workers", "dice_weight", "ce_weight"):
            check_positive(name, getattr(self, name), allow_zero=True)
        if self.dice_weight == 0 and self.ce_weight == 0:
            raise ConfigError("dice_weight", "dice_weight and ce_weight cannot both be 0")
        check_positive("max_slices_per_epoch", self.max_slices_per_epoch, optional=True)
        check_one_of("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check_model_uri("pretrained", self.pretrained)


@dataclass(frozen=True)
class EvalConfig:
    """Settings of ``evaluate``."""

    model: str = ""  # models:/name@alias, models:/name/N or runs:/id/path
    data: Path = Path("data/prepared/phantom")
    split: str = "test"  # train | val | test
    # both empty: Dice 1, HD95 0, NSD 1; one empty: Dice 0, HD95 = diagonal, NSD 0.
    # "nan": an empty reference is not scored (NaN), whatever was predicted (MONAI's ignore_empty).
    empty_policy: str = "dice1_hd0"
    # "probabilities": softmax restored linearly to the original grid, then argmax (nnU-Net);
    # "labels": the argmax restored by nearest neighbour.
    restore: str = "probabilities"
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM  # NSD tolerance of every class and region
    nsd_class_tolerance_mm: tuple[tuple[str, float], ...] = ()  # (name, mm) overrides per class or region
    save_predictions: bool = False  # also write NIfTI predictions on each patient's original grid
    batch_size: int = 32
    device: str = "auto"

    def __post_init__(self) -> None:
        _check_model_uri("model", self.model)
        check_one_of("split", self.split, SPLIT_NAMES)
        check_one_of("empty_policy", self.empty_policy, EMPTY_POLICIES)
        check_one_of("restore", self.restore, RESTORE_METHODS)
        check_positive("nsd_tolerance_mm", self.nsd_tolerance_mm)
        pairs = self.nsd_class_tolerance_mm
        names = [p[0] for p in pairs if isinstance(p, (tuple, list)) and len(p) == 2 and isinstance(p[0], str) and p[0]]
        if len(names) != len(pairs) or len(set(names)) != len(names):
            raise ConfigError(
                "nsd_class_tolerance_mm",
                f"must be distinct (class or region name, mm) pairs such as (('LV', 1.5),), got {pairs!r}",
            )
        for _, mm in pairs:
            check_positive("nsd_class_tolerance_mm", mm)
        check_positive("batch_size", self.batch_size)


@dataclass(frozen=True)
class SearchConfig:
    """Settings shared by ``search_full`` and ``search_lth``."""

    data: Path = Path("data/prepared/phantom")
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    epochs: int = 200  # the paper's full-search budget
    pretrained: str | None = None  # registered baseline U-Net; None = train one first
    freeze_backbone: bool = True  # frozen modules stay in eval mode
    warmup_epochs: int = 15  # weight-only epochs before architecture steps (clamped to epochs // 2)
    w_lr: float = 3e-3  # cell weight learning rate (ours; PC-DARTS: SGD at 0.1)
    w_weight_decay: float = 1e-4  # (ours; PC-DARTS: 3e-4)
    w_optimizer: str = "adamw"  # cell weights: "adamw" (ours) or "sgd" (PC-DARTS: momentum w_momentum)
    w_momentum: float = 0.9  # SGD momentum (PC-DARTS: 0.9); unused with adamw
    w_grad_clip: float | None = None  # clip the cell weights' gradient norm (PC-DARTS: 5.0); None = no clipping
    step_order: str = "weights_first"  # "weights_first" (ours) or "arch_first" (PC-DARTS and DARTS)
    arch_precision: str = "fp32"  # architecture step: "fp32", or "bf16" autocast (CUDA); never fp16 (no scaler)
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
    deterministic: bool = False  # deterministic CUDA kernels, cuDNN autotuner off (CPU runs always are)
    resume: str | None = None
    max_slices_per_epoch: int | None = None
    check_every: int = 50  # architecture steps between two checks (snapshots of the operation weights), not epochs
    compile_cells: bool = False  # torch.compile the search cells (recompiled once per pruning event; eager where no compiler works)
    # cell stages keep only their inputs for the backward pass (less memory, more time): "auto" = on CUDA only
    recompute_backward: str = "auto"

    def __post_init__(self) -> None:
        for op in self.ops:
            check_one_of("ops", op, DARTS_OPS)
        if len(set(self.ops)) != len(self.ops):
            raise ConfigError("ops", f"an operation is listed twice in {list(self.ops)}")
        if not [op for op in self.ops if op != "none"]:
            raise ConfigError("ops", "needs at least one operation other than 'none'")
        for name in ("epochs", "w_lr", "arch_lr", "batch_size", "nodes", "k", "cell_channels", "steps_per_node",
                     "check_every"):
            check_positive(name, getattr(self, name))
        for name in ("warmup_epochs", "w_weight_decay", "arch_weight_decay"):
            check_positive(name, getattr(self, name), allow_zero=True)
        check_positive("max_slices_per_epoch", self.max_slices_per_epoch, optional=True)
        if len(self.arch_betas) != 2 or not all(0 <= b < 1 for b in self.arch_betas):
            raise ConfigError("arch_betas", f"must be two values in [0, 1), got {self.arch_betas}")
        check_one_of("cell_inputs", self.cell_inputs, CELL_INPUTS)
        _check_model_uri("pretrained", self.pretrained)
        check_one_of("w_optimizer", self.w_optimizer, W_OPTIMIZERS)
        check_fraction("w_momentum", self.w_momentum)
        check_positive("w_grad_clip", self.w_grad_clip, optional=True)
        check_one_of("step_order", self.step_order, STEP_ORDERS)
        check_one_of("arch_precision", self.arch_precision, ARCH_PRECISIONS)
        check_one_of("recompute_backward", self.recompute_backward, RECOMPUTE_BACKWARD)


# Stability criteria of IAC-LTH (iac.nas.stability.make_stability_test): the
# paper's Jensen-Shannon test and the sequential test on log-probability margins.
STABILITY_CRITERIA = ("js", "sequential")


@dataclass(frozen=True)
class StabilityConfig:
    """IAC-LTH stability test and progressive pruning (``search_lth``).

    ``tau``, ``patience``, ``window`` and ``smoothing`` belong to
    ``criterion="js"``; ``seq_error`` and ``seq_effect`` to
    ``criterion="sequential"`` (the JS test also uses them, only to flag
    cuts that showed no preference). See ``docs/deviations.md`` §7.
    """

    criterion: str = "js"  # "js" (the paper's divergence test) or "sequential" (margin confidence sequence)
    tau: float = 1e-4  # JS divergence (base 2) threshold: ~60 % of the full-speed divergence at the defaults (1.6e-4)
    patience: int = 2  # consecutive stable checks required
    window: int = 1  # compare with the distribution `window` checks earlier (checks: SearchConfig.check_every)
    smoothing: float = 0.0  # EMA factor on the distributions (0 = none)
    keep_schedule: tuple[int, ...] = (3, 2, 1)  # top-k kept at successive stabilities
    # sequential (provisional defaults chosen on the simulator's calibration seeds, docs/deviations.md §7):
    # chance that an operation without a real handicap is ever shown worse than the leader (per pair, all checks)
    seq_error: float = 0.2
    # smallest drift of a log-probability margin per unit of its variance worth finding (1/logit; with Adam
    # ~0.5 x per-step gradient SNR / arch_lr: 80 ~ SNR 0.1); pure noise is called "no preference" after a
    # margin variance of about 2 ln(1/seq_miss) / seq_effect**2
    seq_effect: float = 80.0
    # chance that an operation with a handicap of `seq_effect` is called indifferent (no preference)
    seq_miss: float = 0.05

    def __post_init__(self) -> None:
        check_one_of("criterion", self.criterion, STABILITY_CRITERIA)
        check_fraction("seq_error", self.seq_error, closed_low=False)
        check_positive("seq_effect", self.seq_effect)
        check_fraction("seq_miss", self.seq_miss, closed_low=False)
        check_positive("tau", self.tau)
        for name in ("patience", "window"):
            check_positive(name, getattr(self, name))
        check_fraction("smoothing", self.smoothing)
        ks = list(self.keep_schedule)
        if not ks or any(k < 1 for k in ks) or ks != sorted(ks, reverse=True) or len(set(ks)) != len(ks):
            raise ConfigError("keep_schedule", f"must be strictly decreasing positive integers such as 3,2,1, got {self.keep_schedule}")


@dataclass(frozen=True)
class StatsConfig:
    """Settings of ``stats``: patient-level paired comparisons of evaluate runs."""

    reference: str = "iac-lth"  # method every other method is compared with
    metrics: tuple[str, ...] = ("dice", "hd95", "nsd")  # per-case columns tested (each its own Holm family)
    alpha: float = 0.05  # level of the Holm-corrected tests, of each one-sided TOST test and of non-inferiority
    margin: float = 0.01  # equivalence (TOST) margin on the Dice scale [0, 1]
    hd95_margin: float | None = None  # equivalence margin for HD95 in mm; None = no TOST on HD95
    nsd_margin: float | None = None  # equivalence margin on the NSD scale [0, 1]; None = no TOST on NSD
    # One-sided non-inferiority of the reference (worse by less than the margin); None = not tested.
    ni_margin: float | None = None  # on the Dice scale
    hd95_ni_margin: float | None = None  # in mm
    nsd_ni_margin: float | None = None  # on the NSD scale
    min_pairs: int = 10  # fewest patients a comparison may rest on (exact p >= 2 / 2**n)
    zero_method: str = "zsplit"  # scipy wilcoxon zero handling: zero differences keep their patient
    exact_max_n: int = 50  # exact signed-rank p up to this many pairs (no ties, no zeros)
    n_boot: int = 10000  # bootstrap resamples of the (descriptive) median paired difference
    ci_level: float = 0.95  # level of the exact Hodges-Lehmann interval and of the bootstrap interval
    bootstrap_seed: int = 0  # every comparison's bootstrap starts from this seed
    average_frames: bool = True  # ACDC: mean of the frames per patient; False = one analysis per frame

    def __post_init__(self) -> None:
        for metric in self.metrics:
            check_one_of("metrics", metric, STATS_METRICS)
        check_fraction("alpha", self.alpha, closed_low=False)
        check_fraction("ci_level", self.ci_level, closed_low=False)
        check_positive("margin", self.margin)
        for name in ("hd95_margin", "nsd_margin", "ni_margin", "hd95_ni_margin", "nsd_ni_margin"):
            check_positive(name, getattr(self, name), optional=True)
        for name in ("min_pairs", "exact_max_n", "n_boot"):
            check_positive(name, getattr(self, name))
        check_one_of("zero_method", self.zero_method, ZERO_METHODS)

    def margins(self, metric: str) -> tuple[float | None, float | None]:
        """``(equivalence margin, non-inferiority margin)`` of a metric, on its own scale (None = not tested)."""
        check_one_of("metrics", metric, STATS_METRICS)
        return {
            "dice": (self.margin, self.ni_margin),
            "hd95": (self.hd95_margin, self.hd95_ni_margin),
            "nsd": (self.nsd_margin, self.nsd_ni_margin),
        }[metric]


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
    check_every: int = 50  # architecture steps between two checks of both searches
    max_slices_per_epoch: int | None = None  # cap on slices per epoch (None: all)
    phantom_patients: int = 34  # cohort size when dataset=phantom
    phantom_size: int = 64  # phantom in-plane matrix
    phantom_variant: str = "classic"  # generator when dataset=phantom (PHANTOM_VARIANTS)
    phantom_test_fraction: float | None = None  # test share of the phantom's patients (None: prepare's default)
    phantom_val_fraction: float | None = None  # validation share of the phantom's patients (None: prepare's default)
    baseline_lr: float | None = None  # learning rate of the baseline (None: TrainConfig's default)
    extra_lr: float | None = None  # learning rate of every extra-epoch variant (None: TrainConfig's default)
    cell_channels: int | None = None  # searched cells' width (None: SearchConfig's default)
    min_pairs: int = 10  # stats: fewest paired patients


# Named budgets of ``main``. `quick` fits a 2-core CPU in about 15 minutes and
# is a smoke-sized study on a reduced test bed; `smoke` runs in the test suite
# (classic phantom); `study` is the headline benchmark's frozen design of the
# test bed (benchmarks/lth_speedup.py: Design; hours on 2 cores); `paper` is the
# paper's 200-epoch full search (GPU hosts).
BUDGETS: dict[str, Budget] = {
    "smoke": Budget(
        baseline_epochs=1,
        extra_epochs=1,
        search_epochs=3,
        warmup_epochs=1,
        stability=StabilityConfig(tau=0.05, patience=1, window=1),
        check_every=1,
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
        stability=StabilityConfig(tau=5e-6, patience=1, window=1),
        check_every=10,
        max_slices_per_epoch=None,
        phantom_patients=34,
        phantom_size=32,
        # The classic phantom: on a 34-patient test bed at 32x32 (48-pixel slices) the same study took
        # 16 min 8 s from a fresh clone, over the 15 minutes (docs/benchmarks.md); `study` runs the test bed.
    ),
    # The frozen design of the headline benchmark (docs/datasets.md, "Frozen design").
    "study": Budget(
        baseline_epochs=150,
        extra_epochs=30,
        search_epochs=200,
        warmup_epochs=15,
        # The paper's JS rule: the calibration's choice (tau 1e-8) never prunes on the test bed (docs/benchmarks.md).
        stability=StabilityConfig(),
        check_every=10,
        max_slices_per_epoch=160,
        phantom_patients=140,
        phantom_size=48,
        phantom_variant="testbed",
        phantom_test_fraction=0.74,
        phantom_val_fraction=0.06,
        baseline_lr=3e-3,
        extra_lr=1e-3,
        cell_channels=8,
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
    # `prepare` settings used when main prepares (parse_prepare_options: "spacing=1.25 slice_size=192")
    prepare_options: tuple[tuple[str, Any], ...] = ()
    executor: str = "local"  # one of EXECUTORS: steps one after another here, or as Ray tasks
    ray_address: str = ""  # executor=ray: the cluster (host:port or auto); "" = a local cluster started here
    step_cpus: int | None = None  # CPUs (and torch threads) per step; None = torch's default locally, 1 on Ray
    step_gpus: float = 0.0  # executor=ray: GPUs each training/search/evaluation task asks Ray for
    claim_timeout: float = 60.0  # seconds without a heartbeat after which a running step counts as dead

    def __post_init__(self) -> None:
        check_one_of("executor", self.executor, EXECUTORS)
        check_positive("step_cpus", self.step_cpus, optional=True)
        check_positive("step_gpus", self.step_gpus, allow_zero=True)
        check_positive("claim_timeout", self.claim_timeout)
        if self.ray_address and self.executor != "ray":
            raise ConfigError("ray_address", "is only used with executor=ray")
        check_one_of("dataset", self.dataset, DATASETS)
        if self.dataset != "phantom" and self.source is None and not self.prepared_as_is:
            raise ConfigError(
                "source",
                f"dataset={self.dataset} needs the raw dataset folder (source), or data= a folder `prepare` wrote",
            )
        for key, _ in self.prepare_options:
            check_one_of("prepare_options", key, PREPARE_OPTIONS)
        check_one_of("budget", self.budget, BUDGET_NAMES)
        if not self.seeds:
            raise ConfigError("seeds", "give at least one seed")
        for skip in self.skips:
            check_one_of("skips", skip, tuple(k for k in SKIPS if k not in ("identity", "iac")))
        for name in ("baseline_epochs", "extra_epochs", "search_epochs", "patience", "window", "check_every", "tau"):
            check_positive(name, getattr(self, name), optional=True)
        check_positive("warmup_epochs", self.warmup_epochs, allow_zero=True, optional=True)
    @property
    def prepared_as_is(self) -> bool:
        """A raw dataset without ``source`` whose ``data`` folder is prepared already: used as it is."""
        return (self.dataset != "phantom" and self.source is None and self.data is not None
                and (Path(self.data) / "manifest.json").is_file())


# PrepareConfig fields `main` passes through to `prepare` (dataset, source and out are main's own).
PREPARE_OPTIONS = (
    "spacing", "slice_size", "size_multiple", "split_seed", "val_fraction", "test_fraction", "split_file",
    "modalities", "amos_modality", "kits_version", "ct_clip", "ct_samples_per_case", "workers", "skip_bad",
    "overwrite", "phantom_patients", "phantom_seed", "phantom_size", "phantom_variant",
)


def parse_prepare_options(text: str) -> tuple[tuple[str, Any], ...]:
    """``"spacing=1.25 modalities=flair,t1 skip_bad=true"`` -> typed ``(("spacing", 1.25), ...)`` pairs.

    Space-separated ``key=value`` pairs of :class:`PrepareConfig` fields
    (:data:`PREPARE_OPTIONS`); lists (``modalities``, ``ct_clip``) are
    comma-separated. The values are checked again when ``PrepareConfig`` is built.

    Raises:
        ConfigError: naming ``prepare_options`` for an unknown key or a value of the wrong type.
    """
    types = {f.name: str(f.type) for f in dataclasses.fields(PrepareConfig)}
    out = []
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError("prepare_options", f"{item!r} is not key=value (e.g. 'spacing=1.25 slice_size=192')")
        check_one_of("prepare_options", key, PREPARE_OPTIONS)
        kind = types[key]
        try:
            if "bool" in kind:
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                typed: Any = value.lower() in ("true", "1")
            elif kind.startswith("tuple[float"):
                typed = tuple(float(v) for v in value.split(","))
            elif kind.startswith("tuple[str"):
                typed = tuple(v for v in value.split(",") if v)
            elif "float" in kind:
                typed = float(value)
            elif "int" in kind:
                typed = int(value)
            elif "Path" in kind:
                typed = Path(value)
            else:
                typed = value
        except ValueError:
            raise ConfigError("prepare_options", f"{key}={value!r}: expected a value of type {kind}") from None
        out.append((key, typed))
    return tuple(out)


assert tuple(BUDGETS) == BUDGET_NAMES, "BUDGET_NAMES must list the BUDGETS presets"


# Label file endings ``predict`` can write (SimpleITK picks the writer by the ending).
LABEL_ENDINGS = (".nii.gz", ".nii", ".mha", ".nrrd")


@dataclass(frozen=True)
class PredictConfig:
    """Settings of ``predict``: segment raw, unlabelled images with a registered U-Net."""

    model: str = ""  # models:/name@alias, models:/name/N, models:/<model_id> or runs:/id/model
    inputs: tuple[Path, ...] = ()  # folders of images and/or image files
    out: Path = Path("predictions")  # one label file per image goes here
    suffix: str = ".nii.gz"  # the label files' ending (format)
    device: str = "auto"  # the model's device (its `device` model config)
    strict: bool = False  # stop at the first image that cannot be segmented (default: list it, go on)

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("model", "give the U-Net to predict with (models:/iac-unet-<dataset>-<backbone>@champion)")
        _check_model_uri("model", self.model)
        if not self.inputs:
            raise ConfigError("inputs", "give a folder of images or image files")
        check_one_of("suffix", self.suffix, LABEL_ENDINGS)
