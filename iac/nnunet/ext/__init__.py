"""The folder ``nnUNet_extTrainer`` points at (``iac_trainers`` re-exports the trainers)."""
