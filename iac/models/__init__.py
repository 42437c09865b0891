"""U-Net backbones with pluggable skip modules (see ``docs/architecture.md``, Networks)."""

from iac.models.backbones import (
    BACKBONES,
    DEFAULT_PRESET,
    PRESETS,
    SkipUNet,
    create_backbone,
    registry_backbone_name,
)
from iac.models.skips import SKIP_KINDS, create_skip

__all__ = [
    "BACKBONES",
    "DEFAULT_PRESET",
    "PRESETS",
    "SKIP_KINDS",
    "SkipUNet",
    "create_backbone",
    "create_skip",
    "registry_backbone_name",
]
