"""nnU-Net v2 backbone (optional extra ``[nnunet]``): cells in nnU-Net's skips.

Only modules under ``iac/nnunet`` import ``nnunetv2`` or
``dynamic_network_architectures``; the rest of the project reaches them
lazily, so the core works without the extra installed.

- ``network``: ``IACUNetDecoder`` and the ``IACPlainConvUNet`` /
  ``IACResidualEncoderUNet`` networks with the project's skip seam.
- ``checkpoint``: reading a trained ``checkpoint_final.pth`` safely.
- ``export``: a prepared cohort as an nnU-Net raw dataset.
"""
