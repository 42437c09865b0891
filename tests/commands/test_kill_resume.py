"""Kill a step at every named fault point, resume it, and get what an uninterrupted run gets.

Each step runs as its own process (``python -m iac.cli``) with ``IAC_FAULT``
set, so the kill is a real ``SIGKILL``: nothing flushed, the MLflow run left
``RUNNING``. One chain per step walks all five points; each link resumes the
run before it, so the chain also covers a resume of a run that left no
checkpoint (its ``resumed_from`` chain is followed) and a chain with none at
all (a fresh start).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from killkit import launch

# Tiny budgets: 8 slices a epoch in batches of 4 -> 2 training batches per retrain epoch.
TRAIN = ["--epochs", "3", "--batch-size", "4", "--max-slices-per-epoch", "8", "--seed", "0"]
TRAIN_BATCHES = 2
SEARCH = ["--epochs", "3", "--warmup-epochs", "1", "--batch-size", "4", "--max-slices-per-epoch", "8",
          "--cell-channels", "4", "--nodes", "2", "--check-every", "1", "--seed", "0",
          "--tau", "0.5", "--patience", "1", "--window", "1"]


@pytest.fixture(scope="module")
def setting(tmp_path_factory, mlflow_store):
    """A tiny prepared phantom and an experiment of its own."""
    import mlflow

    from iac.config import PrepareConfig
    from iac.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("killresume")
    prep = prepare_dataset(PrepareConfig(out=root / "prepared", phantom_patients=8, phantom_size=32, workers=1),
                           progress=False)
    name = "kill-resume"
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=(root / "artifacts").as_uri())
    return {"data": str(prep.root), "experiment": name}


def _run(run_id: str):
    import mlflow

    return mlflow.get_run(run_id)


def _outputs(run_id: str) -> dict:
    import json

    return json.loads(_run(run_id).data.tags["iac_outputs"])


def _artifacts(run_id: str) -> set[str]:
    import mlflow

    client = mlflow.MlflowClient()
    out, todo = set(), [None]
    while todo:
        for a in client.list_artifacts(run_id, todo.pop()):
            (todo.append(a.path) if a.is_dir else out.add(a.path))
    return out


def _kill_chain(step: str, args: list[str], experiment: str, faults: list[str]) -> list:
    """Launch ``step`` once per fault, each resuming the run before it, then once more to the end."""
    launches, previous = [], None
    for fault in [*faults, None]:
        resume = ["--resume", previous] if previous else []
        got = launch(step, [*args, *resume], experiment, fault)
        if fault:
            assert got.killed, f"{fault}: expected a kill, got exit {got.returncode}\n{got.output[-3000:]}"
        else:
            assert got.returncode == 0, got.output[-3000:]
        assert got.run_id != previous, f"{fault}: no new run was started"
        launches.append(got)
        previous = got.run_id
    return launches


def _assert_superseded(launches) -> None:
    """Every killed run is KILLED and points to the run that took it over; the last one FINISHED."""
    from iac.commands.resume import RESUMED_FROM_TAG, SUPERSEDED_TAG

    for older, newer in zip(launches, launches[1:]):
        run = _run(older.run_id)
        assert run.info.status == "KILLED", older.run_id
        assert run.data.tags[SUPERSEDED_TAG] == newer.run_id
        assert _run(newer.run_id).data.tags[RESUMED_FROM_TAG] == older.run_id
    assert _run(launches[-1].run_id).info.status == "FINISHED"


def test_retrain_killed_at_every_point_resumes_to_the_same_weights(setting, single_thread):
    from iac import registry
    from iac.commands.resume import CHECKPOINT_ARTIFACT, FRESH_TAG, STAGING_ARTIFACT
    from iac.train.checkpoint import zip_problem

    args = ["--data", setting["data"], *TRAIN]
    reference = launch("retrain", args, setting["experiment"])
    assert reference.returncode == 0, reference.output[-3000:]
    faults = [
        "before_checkpoint:1",             # 1: epoch 1 done, nothing saved
        f"mid_epoch:{TRAIN_BATCHES + 1}",  # 2: afresh (chain 1 has no checkpoint); killed in epoch 2
        "checkpoint_write:1",              # 3: from 2's epoch 1; killed writing epoch 2's checkpoint
        "checkpoint_upload:2",             # 4: 3 left none, so from 2's; epoch 2 published, epoch 3 torn
        "register:1",                      # 5: from 4's epoch 3 (staging slot); killed registering
    ]
    chain = _kill_chain("retrain", args, setting["experiment"], faults)

    first, fresh, write_killed, torn, reg_killed, last = chain
    assert not _artifacts(first.run_id) & {CHECKPOINT_ARTIFACT, STAGING_ARTIFACT}
    assert "left no checkpoint; starting afresh" in fresh.output
    assert _run(fresh.run_id).data.tags.get(FRESH_TAG) == "true"
    assert not _artifacts(write_killed.run_id) & {CHECKPOINT_ARTIFACT, STAGING_ARTIFACT}
    assert f"continuing from run {fresh.run_id}'s" in torn.output
    assert _run(torn.run_id).data.tags["resume_checkpoint_run"] == fresh.run_id
    # The torn upload left a final slot that does not verify; the staging slot holds the complete epoch 3.
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(run_id=torn.run_id, artifact_path=CHECKPOINT_ARTIFACT))
    assert zip_problem(local) is not None
    assert _run(reg_killed.run_id).data.tags["resume_checkpoint_run"] == torn.run_id
    assert _run(last.run_id).data.tags["resume_checkpoint_run"] == torn.run_id
    _assert_superseded(chain)

    want = registry.load_unet(_outputs(reference.run_id)["model_uri"], device="cpu")[0].state_dict()
    got = registry.load_unet(_outputs(last.run_id)["model_uri"], device="cpu")[0].state_dict()
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), k


def test_search_lth_killed_at_every_point_resumes_to_the_same_genotype(setting, single_thread):
    import mlflow

    from iac.nas.genotype import load_genotype

    base = launch("retrain", ["--data", setting["data"], "--epochs", "1", "--batch-size", "4",
                              "--max-slices-per-epoch", "8"], setting["experiment"])
    assert base.returncode == 0, base.output[-3000:]
    args = ["--data", setting["data"], "--pretrained", _outputs(base.run_id)["model_uri"], *SEARCH]
    reference = launch("search_lth", args, setting["experiment"])
    assert reference.returncode == 0, reference.output[-3000:]
    ref = _run(reference.run_id)
    assert ref.data.metrics["epochs_run"] >= 3, "the reference must run every epoch for the kills to land"
    # Architecture steps (one per batch pair after the one warm-up epoch) give the batch pairs per epoch.
    from iac.nas.trajectory import load_trajectory

    traj = load_trajectory(mlflow.artifacts.download_artifacts(run_id=reference.run_id,
                                                               artifact_path="trajectory.json"))
    per_epoch = traj["epochs"][1]["arch_steps"] - traj["epochs"][0]["arch_steps"]
    assert per_epoch >= 1
    faults = [
        "before_checkpoint:1",
        f"mid_epoch:{per_epoch + 1}",  # in epoch 2
        "checkpoint_write:1",
        "checkpoint_upload:2",
        "register:1",
    ]
    chain = _kill_chain("search_lth", args, setting["experiment"], faults)
    _assert_superseded(chain)

    def genotype(run_id):
        return load_genotype(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="genotype/genotype.json"))

    last = _run(chain[-1].run_id)
    assert genotype(chain[-1].run_id) == genotype(reference.run_id)
    assert last.data.metrics["epochs_run"] == ref.data.metrics["epochs_run"]
    assert last.data.metrics["pruning_events"] == ref.data.metrics["pruning_events"]
    assert last.data.metrics["final_val_dice"] == ref.data.metrics["final_val_dice"]
