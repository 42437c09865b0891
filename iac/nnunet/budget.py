"""The paper's epoch budget in nnU-Net's epochs.

The paper counts epochs as passes over the training slices (200 for the full
search). nnU-Net counts epochs of a fixed number of iterations (250 by
default), each drawing one batch of ``batch_size`` patches, whatever the
dataset's size. The trainers keep nnU-Net's epoch as their unit (validation,
checkpoints and logging follow it) and convert the budget by weight steps:

    steps per paper epoch = ceil(slices / batch_size)
    nnU-Net epochs        = ceil(paper epochs x steps per paper epoch / iterations per epoch)

where ``slices`` are the 2-D slices of the cases the weights are trained on:
the weight half of the fold's training cases for the search (as the project's
search, whose epoch is one pass over its weight half, with one architecture
step per weight step), all of the fold's training cases for retraining.
Warm-up epochs convert the same way. ``docs/deviations.md`` lists this.
"""

from __future__ import annotations

import math

__all__ = ["nnunet_epochs"]


def nnunet_epochs(paper_epochs: int, slices: int, batch_size: int, iterations_per_epoch: int, cap: int = 0,
                  minimum: int = 1) -> int:
    """nnU-Net epochs giving as many weight steps as ``paper_epochs`` passes over ``slices``.

    Args:
        paper_epochs: the budget in the paper's epochs (0 allowed, e.g. no warm-up).
        slices: 2-D slices one paper epoch passes over.
        batch_size: nnU-Net's batch size of the configuration.
        iterations_per_epoch: training iterations of one nnU-Net epoch.
        cap: at most this many nnU-Net epochs (0 = no cap).
        minimum: at least this many (the warm-up passes 0).
    """
    if slices < 1 or batch_size < 1 or iterations_per_epoch < 1 or paper_epochs < 0:
        raise ValueError(f"cannot map {paper_epochs} epochs of {slices} slices, batch {batch_size}, "
                         f"{iterations_per_epoch} iterations per epoch")
    steps = paper_epochs * math.ceil(slices / batch_size)
    n = max(minimum, math.ceil(steps / iterations_per_epoch))
    return min(n, cap) if cap else n
