"""The step cache against a real tracking store: reuse, relaunch, resume."""

from __future__ import annotations

import json

import pytest

from iac.study.cache import OUTPUTS_TAG, STEP_KEY_TAG, StepCache, step_key

PARAMS = {"epochs": 2, "data_fingerprint": "abc"}


@pytest.fixture
def printed() -> list[str]:
    """The progress lines the cache printed."""
    return []


@pytest.fixture
def cache(experiment, printed) -> StepCache:
    import mlflow

    return StepCache(mlflow.get_experiment_by_name(experiment).experiment_id, "code-1", echo=printed.append)


class Step:
    """A step that records each launch and finishes its run with outputs, as the step runners do."""

    def __init__(self) -> None:
        self.launches: list[tuple[dict, str | None]] = []

    def __call__(self, extra_tags: dict[str, str], resume: str | None) -> dict:
        import mlflow

        self.launches.append((extra_tags, resume))
        with mlflow.start_run() as run:
            outputs = {"run_id": run.info.run_id, "folder": "out"}
            mlflow.set_tags({**extra_tags, OUTPUTS_TAG: json.dumps(outputs)})
        return outputs


def _unfinished_run(cache: StepCache, checkpoint: bool, tmp_path) -> str:
    """A FAILED run of the step (with ``checkpoints/last.pt`` when asked)."""
    import mlflow

    with mlflow.start_run() as run:
        mlflow.set_tag(STEP_KEY_TAG, step_key("retrain", PARAMS, cache.code))
        if checkpoint:
            (tmp_path / "last.pt").write_bytes(b"weights")
            mlflow.log_artifact(str(tmp_path / "last.pt"), "checkpoints")
    mlflow.MlflowClient().set_terminated(run.info.run_id, "FAILED")
    return run.info.run_id


def test_step_keys_follow_the_step_its_parameters_and_the_code():
    key = step_key("retrain", PARAMS, "code-1")
    assert key == step_key("retrain", dict(reversed(PARAMS.items())), "code-1")  # order does not matter
    others = {step_key("evaluate", PARAMS, "code-1"), step_key("retrain", {**PARAMS, "epochs": 3}, "code-1"),
              step_key("retrain", PARAMS, "code-2")}
    assert key not in others and len(others) == 3


def test_a_finished_step_is_reused(cache, printed):
    step = Step()
    first = cache.run("retrain", "baseline", PARAMS, step)
    again = cache.run("retrain", "baseline again", PARAMS, step)
    assert not first.reused and again.reused
    assert again.outputs == first.outputs and len(step.launches) == 1
    assert step.launches[0] == ({STEP_KEY_TAG: step_key("retrain", PARAMS, "code-1")}, None)
    assert [(s["step"], s["run_id"], s["reused"]) for s in cache.log] == [
        ("baseline", first.outputs["run_id"], False), ("baseline again", first.outputs["run_id"], True)
    ]
    assert printed == ["  > baseline: running", f"  = baseline again: reusing finished run {first.outputs['run_id'][:8]}"]


def test_other_parameters_or_code_launch_the_step_again(cache):
    step = Step()
    cache.run("retrain", "a", PARAMS, step)
    cache.run("retrain", "b", {**PARAMS, "epochs": 3}, step)
    StepCache(cache.experiment_id, "code-2", echo=cache.echo).run("retrain", "c", PARAMS, step)
    assert len(step.launches) == 3


def test_outputs_that_no_longer_validate_launch_the_step_again(cache):
    step = Step()
    cache.run("prepare", "prepare", PARAMS, step)
    again = cache.run("prepare", "prepare", PARAMS, step, validate=lambda outputs: False)
    assert not again.reused and len(step.launches) == 2


@pytest.mark.parametrize("checkpoint", [True, False])
def test_an_unfinished_run_is_resumed_and_then_superseded(cache, printed, checkpoint, tmp_path):
    # With or without a checkpoint the step is handed the run: it follows the
    # run's resumed_from chain, or starts afresh when the chain left none.
    import mlflow

    from iac.commands.resume import SUPERSEDED_TAG

    failed = _unfinished_run(cache, checkpoint, tmp_path)
    step = Step()
    out = cache.run("retrain", "baseline", PARAMS, step)
    assert step.launches[0][1] == failed
    assert printed == ["  > baseline: resuming run " + failed[:8]]
    old = mlflow.get_run(failed)
    assert old.info.status == "KILLED" and old.data.tags[SUPERSEDED_TAG] == out.outputs["run_id"]
    # A superseded run is not handed out again: the next launch runs afresh (the step finished meanwhile).
    assert cache.run("retrain", "baseline", PARAMS, step).reused


def test_a_reused_step_records_the_wall_time_of_the_run_that_did_the_work(cache):
    import mlflow

    step = Step()
    first = cache.run("retrain", "baseline", PARAMS, step)
    cache.run("retrain", "baseline again", PARAMS, step)
    info = mlflow.get_run(first.outputs["run_id"]).info
    launched, reused = cache.log
    assert launched["original_seconds"] == launched["seconds"]
    assert reused["original_seconds"] == pytest.approx((info.end_time - info.start_time) / 1000.0)
