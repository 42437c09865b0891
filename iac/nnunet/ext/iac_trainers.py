"""nnU-Net's trainer lookup for the project's trainers: point ``nnUNet_extTrainer`` at this folder.

nnU-Net imports every module of the folders listed in ``nnUNet_extTrainer``
by its file name and takes the class named by ``-tr``; this module re-exports
the trainers of :mod:`iac.nnunet.trainers` (``iac`` must be importable).
"""

from iac.nnunet.trainers import nnUNetTrainerIACRetrain, nnUNetTrainerIACSearch

__all__ = ["nnUNetTrainerIACSearch", "nnUNetTrainerIACRetrain"]
