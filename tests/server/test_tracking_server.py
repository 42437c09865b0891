"""The pipeline against a shared tracking server: a real ``mlflow server`` on a real PostgreSQL.

- the step chain (prepare -> retrain -> search -> retrain with the cell -> evaluate),
  with the artifacts uploaded to and downloaded from the served artifact store;
- eight ``retrain`` processes at once, each registering a version of the same model:
  no run, metric or version lost, no version number twice;
- eight runs logging the same new dataset at the same instant: every one of them logs it
  (the server's datasets table keys it once);
- the server restarted while a ``retrain`` runs: the run finishes, and what it
  logged before the restart is still there.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from iac.config import BackboneConfig, EvalConfig, PrepareConfig, SearchConfig, StabilityConfig, TrainConfig

WRITERS = 8
DATASET_ROUNDS = 6
TINY_TRAIN = dict(backbone=BackboneConfig(), batch_size=4, max_slices_per_epoch=4)
TINY_SEARCH = dict(epochs=2, warmup_epochs=1, max_slices_per_epoch=4, batch_size=4, cell_channels=4, nodes=2, check_every=1)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    from iac.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("server-data")
    return prepare_dataset(PrepareConfig(out=root / "prepared", phantom_patients=8, phantom_size=32, workers=1), progress=False).root


def _experiment(name: str) -> str:
    """A fresh experiment on the server, set as active; its artifacts go to the served store."""
    import mlflow

    exp = mlflow.create_experiment(f"{name}-{time.time_ns()}")
    mlflow.set_experiment(experiment_id=exp)
    return exp


def _retrain_worker(args: tuple[str, str, str, int, int]) -> dict:
    """One writer process: a real ``retrain`` against the server (module level, so a process pool can run it)."""
    import mlflow
    import torch

    from iac.commands.retrain import run_retrain

    url, experiment_id, data, seed, epochs = args
    torch.set_num_threads(1)
    mlflow.set_tracking_uri(url)
    mlflow.set_registry_uri(url)
    mlflow.set_experiment(experiment_id=experiment_id)
    return run_retrain(TrainConfig(data=Path(data), epochs=epochs, seed=seed, **TINY_TRAIN))


def _dataset_worker(args: tuple[str, str, str, str, float]) -> str:
    """One run that logs ``data`` as its input at the wall-clock instant ``at`` (so the writers collide)."""
    import mlflow

    from iac.commands import common

    url, experiment_id, data, digest, at = args
    mlflow.set_tracking_uri(url)
    mlflow.set_experiment(experiment_id=experiment_id)
    with mlflow.start_run() as run:
        time.sleep(max(0.0, at - time.time()))
        common.log_dataset_input(Path(data), "phantom", digest, context="training")
    return run.info.run_id


def _pool(n: int):
    """Worker processes forked from a fresh server process that imported the step once (no torch state inherited)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["iac.commands.retrain"])
    return ctx.Pool(n)


def test_the_step_chain_runs_against_the_server(on_server, prepared, single_thread, tmp_path):
    import mlflow

    from iac import registry
    from iac.commands.evaluate import run_evaluate
    from iac.commands.retrain import run_retrain
    from iac.commands.search import run_search_step

    _experiment("chain")
    base = run_retrain(TrainConfig(data=prepared, epochs=1, **TINY_TRAIN))
    scfg = SearchConfig(data=prepared, pretrained=base["model_uri"], **TINY_SEARCH)
    lth = run_search_step(scfg, "lth", StabilityConfig(tau=0.5, patience=1, window=1))
    cell = run_retrain(TrainConfig(data=prepared, skip="iac", genotype=lth["cell_uri"], epochs=1, **TINY_TRAIN))
    ev = run_evaluate(EvalConfig(model=cell["model_uri"], data=prepared, split="val"))

    client = mlflow.MlflowClient()
    for out in (base, lth, cell, ev):
        run = client.get_run(out["run_id"])
        assert run.info.status == "FINISHED"
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # served, not a local path
    # The artifacts went through the server and come back from it.
    assert any(a.path == "checkpoints" for a in client.list_artifacts(base["run_id"]))
    assert client.get_metric_history(ev["run_id"], "dice_patient_mean_fg")
    genotype = Path(mlflow.artifacts.download_artifacts(run_id=lth["run_id"], artifact_path="genotype/genotype.json", dst_path=str(tmp_path)))
    assert json.loads(registry.resolve(lth["cell_uri"]).tags["genotype_json"]) == json.loads(genotype.read_text())
    # Evaluating the U-Net with the cell on val wrote its Dice back to the cell's version.
    assert registry.resolve(lth["cell_uri"]).tags["val_dice"] != "nan"
    # The registered U-Net loads from the served store and predicts.
    model = mlflow.pyfunc.load_model(cell["model_uri"])
    assert model is not None


def test_eight_concurrent_writers_lose_nothing(on_server, prepared):
    import mlflow

    exp = _experiment("writers")
    with _pool(WRITERS) as pool:
        outs = pool.map(_retrain_worker, [(on_server.url, exp, str(prepared), seed, 2) for seed in range(WRITERS)])

    client = mlflow.MlflowClient()
    run_ids = {o["run_id"] for o in outs}
    assert len(run_ids) == WRITERS
    runs = mlflow.search_runs(experiment_ids=[exp], output_format="list")
    assert {r.info.run_id for r in runs} == run_ids
    for r in runs:
        assert r.info.status == "FINISHED"
        history = client.get_metric_history(r.info.run_id, "epoch_seconds")
        assert sorted(m.step for m in history) == [1, 2], r.info.run_id  # every epoch's metrics arrived
        assert r.data.params["seed"] == r.data.tags["seed"]

    name = outs[0]["model_uri"].split("/")[1]
    versions = [v for v in client.search_model_versions(f"name='{name}'") if v.run_id in run_ids]
    numbers = [int(v.version) for v in versions]
    assert len(versions) == WRITERS and len(set(numbers)) == WRITERS  # one version per writer, none twice
    assert {v.run_id for v in versions} == run_ids
    assert sorted(f"models:/{name}/{n}" for n in numbers) == sorted(o["model_uri"] for o in outs)
    assert max(numbers) - min(numbers) == WRITERS - 1  # consecutive: no number skipped


def test_runs_logging_the_same_new_dataset_at_once_all_log_it(on_server, prepared):
    import mlflow

    exp = _experiment("datasets")
    client = mlflow.MlflowClient()
    with _pool(WRITERS) as pool:
        pool.map(abs, range(WRITERS))  # the workers are up before the instant is set
        for _ in range(DATASET_ROUNDS):  # the race window is short: collide several times
            digest = f"{time.time_ns():036d}"  # new to the server: every writer finds it missing
            at = time.time() + 1
            run_ids = pool.map(_dataset_worker, [(on_server.url, exp, str(prepared), digest, at)] * WRITERS)
            assert len(set(run_ids)) == WRITERS
            for run_id in run_ids:
                run = client.get_run(run_id)
                assert run.info.status == "FINISHED"
                [ds] = run.inputs.dataset_inputs
                assert (ds.dataset.name, ds.dataset.digest, ds.tags[0].value) == ("phantom", digest, "training")


def test_a_server_restart_mid_run_loses_nothing_logged_before(on_server, prepared):
    import mlflow

    exp = _experiment("restart")
    client = mlflow.MlflowClient()
    epochs = 8
    with _pool(1) as pool:
        job = pool.apply_async(_retrain_worker, ((on_server.url, exp, str(prepared), 0, epochs),))
        deadline = time.monotonic() + 300
        before: list = []
        while not before and time.monotonic() < deadline:
            assert not job.ready(), "the run ended before the server could be restarted"
            runs = client.search_runs([exp])
            before = client.get_metric_history(runs[0].info.run_id, "epoch_seconds") if runs else []
            time.sleep(0.2)
        run_id = runs[0].info.run_id
        assert client.get_run(run_id).info.status == "RUNNING"
        on_server.stop()  # the run keeps training; its next calls wait for the server (MLflow's retries)
        time.sleep(2)
        on_server.start()
        out = job.get(timeout=600)

    assert out["run_id"] == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run_id, "epoch_seconds")
    assert sorted(m.step for m in history) == list(range(1, epochs + 1))
    assert {(m.step, m.value) for m in before} <= {(m.step, m.value) for m in history}  # logged before: kept as is
    assert client.get_model_version(*out["model_uri"].split("/")[1:]).run_id == run_id
    assert any(a.path == "checkpoints" for a in client.list_artifacts(run_id))
    assert os.environ["MLFLOW_TRACKING_URI"] == on_server.url
