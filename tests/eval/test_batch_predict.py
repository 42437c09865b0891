"""Finding and grouping the images ``predict`` segments (nnU-Net channel naming)."""

from __future__ import annotations

from pathlib import Path

import pytest

from iac.eval.batch_predict import PredictInputError, find_cases, predict_cases


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"x")


def test_single_channel_images_are_one_case_each_and_other_files_are_ignored(tmp_path):
    _touch(tmp_path, "a.nii.gz", "b_0000.nii.gz", "c.mha", "notes.txt", ".hidden.nii.gz")
    cases = find_cases([tmp_path])
    assert [c.case for c in cases] == ["a", "b", "c"]
    assert cases[1].files == (tmp_path / "b_0000.nii.gz",)


def test_channel_files_are_grouped_by_their_nnunet_index_or_channel_name(tmp_path):
    _touch(tmp_path, "x_0001.nii.gz", "x_0000.nii.gz", "y_flair.nii.gz", "y_t1.nii.gz", "whole.nii.gz")
    cases = {c.case: c.files for c in find_cases([tmp_path], ("flair", "t1"))}
    assert cases["x"] == (tmp_path / "x_0000.nii.gz", tmp_path / "x_0001.nii.gz")
    assert cases["y"] == (tmp_path / "y_flair.nii.gz", tmp_path / "y_t1.nii.gz")
    assert cases["whole"] == (tmp_path / "whole.nii.gz",)  # one 4-D file holds every channel


@pytest.mark.parametrize(
    "names, words",
    [
        (("x_0000.nii.gz",), ["case x", "t1", "x_0001"]),
        (("x_0000.nii.gz", "x_0001.nii.gz", "x_0002.nii.gz"), ["x_0002.nii.gz", "channel 2", "takes 2"]),
        (("notes.txt",), ["no image files", ".nii.gz"]),
    ],
)
def test_incomplete_or_empty_inputs_say_what_is_expected(tmp_path, names, words):
    _touch(tmp_path, *names)
    with pytest.raises(PredictInputError) as err:
        find_cases([tmp_path], ("flair", "t1"))
    for w in words:
        assert w in str(err.value)


def test_a_missing_input_is_named(tmp_path):
    with pytest.raises(PredictInputError, match="nope: no such file or folder"):
        find_cases([tmp_path / "nope"])


def test_a_failure_is_listed_and_the_rest_go_on_unless_strict(tmp_path):
    _touch(tmp_path / "in", "a.nii.gz", "b.nii.gz")
    cases = find_cases([tmp_path / "in"])
    lines = []

    def segment(files, out):
        if files[0].name == "a.nii.gz":
            raise ValueError(f"cannot read {files[0]}: truncated")
        out.write_text("label")

    summary = predict_cases(cases, segment, tmp_path / "out", echo=lines.append)
    assert summary.written == [str(tmp_path / "out" / "b.nii.gz")]
    assert summary.failed == [{"case": "a", "files": str(tmp_path / "in" / "a.nii.gz"),
                               "error": f"cannot read {tmp_path / 'in' / 'a.nii.gz'}: truncated"}]
    assert (tmp_path / "out" / "predict_summary.json").is_file()
    assert any("1 of 2 image(s)" in line and "1 failed" in line for line in lines)
    with pytest.raises(ValueError, match="truncated"):
        predict_cases(cases, segment, tmp_path / "out2", strict=True, echo=lines.append)
