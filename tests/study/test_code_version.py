"""The code version that keys reused steps follows the package, not the docs."""

import subprocess
from pathlib import Path

import pytest

from iac.study.code_version import code_version


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def _commit(root: Path, message: str) -> None:
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", message)


@pytest.fixture()
def checkout(tmp_path: Path) -> Path:
    (tmp_path / "iac").mkdir()
    (tmp_path / "iac" / "step.py").write_text("X = 1\n")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.md").write_text("first\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _commit(tmp_path, "init")
    return tmp_path


def test_docs_edits_and_commits_keep_the_version(checkout: Path) -> None:
    before = code_version(checkout)
    (checkout / "docs" / "notes.md").write_text("second\n")
    assert code_version(checkout) == before
    _commit(checkout, "docs")
    assert code_version(checkout) == before


def test_package_edits_change_the_version_and_committing_them_keeps_it_changed(checkout: Path) -> None:
    before = code_version(checkout)
    (checkout / "iac" / "step.py").write_text("X = 2\n")
    dirty = code_version(checkout)
    assert dirty != before and "+" in dirty
    _commit(checkout, "code")
    committed = code_version(checkout)
    assert committed not in (before, dirty) and "+" not in committed
    (checkout / "pyproject.toml").write_text("[project]\nname = 'y'\n")
    assert code_version(checkout) != committed


def test_outside_a_checkout_the_version_is_a_hash_of_the_package_files(checkout: Path, monkeypatch) -> None:
    monkeypatch.delenv("IAC_GIT_COMMIT", raising=False)
    import shutil

    shutil.rmtree(checkout / ".git")  # as in the Docker image (.dockerignore leaves .git out)
    before = code_version(checkout)
    assert before.startswith("files-")
    (checkout / "docs" / "notes.md").write_text("second\n")
    assert code_version(checkout) == before
    (checkout / "iac" / "step.py").write_text("X = 2\n")
    assert code_version(checkout) != before


def test_the_image_commit_is_part_of_the_version(checkout: Path, monkeypatch) -> None:
    import shutil

    shutil.rmtree(checkout / ".git")
    monkeypatch.setenv("IAC_GIT_COMMIT", "0123456789abcdef0123")
    version = code_version(checkout)
    assert version.startswith("commit-0123456789ab+files-")
    monkeypatch.setenv("IAC_GIT_COMMIT", "fedcba9876543210fedc")
    assert code_version(checkout) != version
