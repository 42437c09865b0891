"""Validating one case: every problem is refused naming the file."""

from __future__ import annotations

import numpy as np
import pytest
from nifti_factory import SHAPE, write_image, write_label

from iac.data.check import check_case
from iac.data.layouts.acdc import INFO
from iac.data.layouts.base import CaseSource, DataError


def test_nan_intensities(tmp_path):
    # A MetaImage keeps Inf when read (NIfTI files are refused earlier, by iac.data.io.check_nifti).
    img = tmp_path / "case.mha"
    arr = np.ones(SHAPE, np.float32)
    arr[1, 2, 3] = np.inf
    write_image(img, arr)
    lab = write_label(tmp_path / "case_gt.mha", (1,))
    case = CaseSource("case", "p1", None, (img,), lab)
    with pytest.raises(DataError, match=r"case\.mha: 1 NaN/Inf"):
        check_case(case, INFO)
