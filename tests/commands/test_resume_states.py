"""Bad checkpoint states: one clear line each, and nothing started; the two-slot upload survives a torn copy."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import torch

from trainkit import ListDataset, TinyNet, make_slices


def _trainer_checkpoint(tmp_path: Path, width: int = 4) -> Path:
    """A real trainer checkpoint of a TinyNet after one epoch."""
    from iac.train.trainer import Trainer

    trainer = Trainer(TinyNet(width=width), ListDataset(make_slices(8)), epochs=1, batch_size=4, device="cpu",
                      progress=False, checkpoint_dir=tmp_path / f"w{width}")
    trainer.fit()
    return tmp_path / f"w{width}" / "last.pt"


def test_a_truncated_checkpoint_is_named_as_such(tmp_path):
    from iac.train.checkpoint import CheckpointError, load_checkpoint

    path = _trainer_checkpoint(tmp_path)
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="is truncated or corrupt"):
        load_checkpoint(cut)
    with pytest.raises(CheckpointError, match="lacks no_such_key"):
        load_checkpoint(path, expected_keys=("model", "no_such_key"))


def test_a_checkpoint_of_another_network_or_code_version_is_refused(tmp_path):
    from iac.train.checkpoint import CheckpointError, load_checkpoint
    from iac.train.trainer import check_trainer_checkpoint

    state = load_checkpoint(_trainer_checkpoint(tmp_path))
    check_trainer_checkpoint(state, TinyNet(width=4))  # its own network: fine
    with pytest.raises(CheckpointError, match="of another network"):
        check_trainer_checkpoint(state, TinyNet(width=6))
    with pytest.raises(CheckpointError, match="written by another code version"):
        check_trainer_checkpoint({**state, "version": 0}, TinyNet(width=4))


def test_a_search_checkpoint_of_another_space_or_code_version_is_refused():
    from pathlib import Path as P

    from iac.config import SearchConfig
    from iac.nas.genotype import SearchSpace
    from iac.nas.search import _CHECKPOINT_KIND, _CHECKPOINT_VERSION, CHECKPOINT_KEYS, check_search_checkpoint
    from iac.train.checkpoint import CheckpointError

    cfg = SearchConfig(data=P("x"), nodes=2, cell_channels=4)
    state = {k: 0 for k in CHECKPOINT_KEYS}
    state.update(kind=_CHECKPOINT_KIND, version=_CHECKPOINT_VERSION,
                 trajectory={"space": SearchSpace.from_config(cfg).to_dict()})
    check_search_checkpoint(state, cfg)
    with pytest.raises(CheckpointError, match=r"another search space \(differs in cell_channels, nodes"):
        check_search_checkpoint(state, SearchConfig(data=P("x"), nodes=3, cell_channels=8))
    with pytest.raises(CheckpointError, match="written by another code version"):
        check_search_checkpoint({**state, "version": _CHECKPOINT_VERSION + 1}, cfg)


def _published_run(tmp_path: Path, experiment: str, ckpts: list[Path]) -> str:
    """A KILLED-looking run (left RUNNING) that published ``ckpts`` one after another."""
    import mlflow

    from iac.commands.resume import CheckpointPublisher
    from iac.tracking import MlflowTracker

    run = mlflow.start_run()
    mlflow.end_run("FAILED")
    publisher = CheckpointPublisher(MlflowTracker(run.info.run_id))
    for c in ckpts:
        publisher.publish(c)
    return run.info.run_id


def _overwrite(run_id: str, artifact: str, data: bytes, tmp_path: Path) -> None:
    import mlflow

    folder, _, name = artifact.rpartition("/")
    (tmp_path / "o").mkdir(exist_ok=True)
    (tmp_path / "o" / name).write_bytes(data)
    mlflow.MlflowClient().log_artifact(run_id, str(tmp_path / "o" / name), folder)


def test_a_torn_final_slot_falls_back_to_the_staging_copy(experiment, tmp_path):
    from iac.commands.resume import CHECKPOINT_ARTIFACT, find_resume_point
    from iac.train.checkpoint import file_digest

    a, b = _trainer_checkpoint(tmp_path, 4), _trainer_checkpoint(tmp_path, 6)
    run_id = _published_run(tmp_path, experiment, [a, b])
    _overwrite(run_id, CHECKPOINT_ARTIFACT, b.read_bytes()[:100], tmp_path)  # a copy cut short
    point = find_resume_point(run_id, tmp_path / "dl", echo=lambda line: None)
    assert point.source_run == run_id and file_digest(point.checkpoint) == file_digest(b)


def test_a_run_whose_checkpoints_are_all_corrupt_stops_with_one_line(experiment, tmp_path):
    from iac.commands.resume import CHECKPOINT_ARTIFACT, STAGING_ARTIFACT, find_resume_point

    a = _trainer_checkpoint(tmp_path)
    run_id = _published_run(tmp_path, experiment, [a])
    for slot in (CHECKPOINT_ARTIFACT, STAGING_ARTIFACT):
        _overwrite(run_id, slot, a.read_bytes()[:-50], tmp_path)
    with pytest.raises(click.ClickException) as err:
        find_resume_point(run_id, tmp_path / "dl", echo=lambda line: None)
    msg = err.value.format_message()
    assert "\n" not in msg and f"run {run_id}'s checkpoint is truncated or corrupt" in msg


def test_retrain_with_a_checkpoint_of_another_network_starts_no_run(experiment, tmp_path, single_thread):
    """At the CLI: one line, exit code 1, and no new run in the store."""
    import mlflow
    from click.testing import CliRunner

    from iac.commands.retrain import retrain
    from iac.config import PrepareConfig
    from iac.data.prepare import prepare_dataset

    prep = prepare_dataset(PrepareConfig(out=tmp_path / "prepared", phantom_patients=6, phantom_size=32, workers=1),
                           progress=False)
    run_id = _published_run(tmp_path, experiment, [_trainer_checkpoint(tmp_path)])
    exp_id = mlflow.get_experiment_by_name(experiment).experiment_id
    before = len(mlflow.search_runs([exp_id], output_format="list"))
    res = CliRunner().invoke(retrain, ["--data", str(prep.root), "--epochs", "1", "--resume", run_id])
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"Error: resume={run_id}: the training checkpoint is of another "
                                                   "network"), res.output
    assert len(mlflow.search_runs([exp_id], output_format="list")) == before
    torch.manual_seed(0)  # leave the global generator in a known state for later tests
