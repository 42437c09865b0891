"""Progress bars only on a terminal; in a log file or a pipe, one summary line per epoch."""

from __future__ import annotations

import io

import pytest
import torch

from iac.progress import FORCE_ENV, bars_enabled
from iac.train.steps import run_epoch
from trainkit import ListDataset, TinyNet, make_slices


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_follow_the_stream_unless_forced(monkeypatch):
    monkeypatch.delenv(FORCE_ENV, raising=False)
    assert bars_enabled(_Terminal()) and not bars_enabled(io.StringIO())
    monkeypatch.setenv(FORCE_ENV, "0")
    assert not bars_enabled(_Terminal())
    monkeypatch.setenv(FORCE_ENV, "1")
    assert bars_enabled(io.StringIO())


def _epoch():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 2, 1)
    batches = [{"image": torch.randn(2, 1, 4, 4), "label": torch.randint(0, 2, (2, 1, 4, 4))} for _ in range(5)]
    loss = lambda logits, y: torch.nn.functional.cross_entropy(logits, y[:, 0])  # noqa: E731
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return run_epoch(model, batches, loss, opt, device=torch.device("cpu"), progress=True, desc="epoch 1/1")


def test_no_bar_is_written_to_a_file_or_pipe(capsys, monkeypatch):
    monkeypatch.delenv(FORCE_ENV, raising=False)
    _epoch()
    assert "epoch 1/1" not in capsys.readouterr().err  # pytest's capture is not a terminal


def test_a_bar_is_drawn_when_asked(capsys, monkeypatch):
    monkeypatch.setenv(FORCE_ENV, "1")
    _epoch()
    assert "epoch 1/1" in capsys.readouterr().err


@pytest.mark.usefixtures("single_thread")
def test_training_without_a_terminal_prints_one_line_per_epoch(capsys, monkeypatch):
    """Trainer epochs: no bar redraws, exactly one summary line each."""
    from iac.train.trainer import Trainer

    monkeypatch.delenv(FORCE_ENV, raising=False)
    torch.manual_seed(0)
    trainer = Trainer(TinyNet(), ListDataset(make_slices(8, 16)), epochs=3, batch_size=4, device="cpu")
    trainer.fit()
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if line.strip()]
    assert len([line for line in lines if line.startswith("epoch ")]) == 3
    assert "\r" not in out.err
