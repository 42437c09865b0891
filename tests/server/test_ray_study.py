"""``main`` on Ray against the shared server: claims, a two-seed smoke study, and a worker killed mid-step.

The Ray cluster is a real local one (``ray.init`` starts it for the study and
stops it at the end); the tracking store is the PostgreSQL-backed server.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from iac.config import MainConfig
from iac.study import claims


def _experiment(name: str) -> str:
    import mlflow

    exp = mlflow.create_experiment(f"{name}-{time.time_ns()}")
    mlflow.set_experiment(experiment_id=exp)
    return exp


def _failed_run(client, experiment_id: str) -> str:
    run = client.create_run(experiment_id)
    client.set_terminated(run.info.run_id, "FAILED")
    return run.info.run_id


def _claimer(start: threading.Barrier, won: dict, run_id: str, token: str) -> None:
    start.wait()  # both claim at the same moment
    won[token] = claims.claim(run_id, token)


def test_two_simultaneous_claimers_one_wins(on_server):
    import mlflow

    client = mlflow.MlflowClient()
    exp = _experiment("claims")
    for _ in range(5):
        run_id = _failed_run(client, exp)
        tokens = [claims.worker_token() for _ in range(2)]
        start, won = threading.Barrier(2), {}
        threads = [threading.Thread(target=_claimer, args=(start, won, run_id, t)) for t in tokens]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [t for t, ok in won.items() if ok]
        assert len(winners) == 1  # exactly one worker may resume the run
        assert client.get_run(run_id).data.params[claims.CLAIM_PARAM] == winners[0]
        assert claims.claim(run_id, winners[0]) and not claims.claim(run_id, claims.worker_token())


def test_a_live_run_is_waited_for_and_a_silent_one_taken_over(on_server, tmp_path):
    import mlflow

    client = mlflow.MlflowClient()
    exp = _experiment("heartbeat")
    run = client.create_run(exp)
    (tmp_path / "last.pt").write_bytes(b"weights")
    client.log_artifact(run.info.run_id, str(tmp_path / "last.pt"), "checkpoints")
    has_checkpoint = lambda run_id: True  # noqa: E731 - the artifact above
    with claims.Heartbeat(run.info.run_id, every=0.5):
        time.sleep(1.2)
        live = client.get_run(run.info.run_id)
        ready, alive = claims.resumable([live], has_checkpoint, timeout=5, unfinished=("RUNNING",))
        assert (ready, [r.info.run_id for r in alive]) == ([], [run.info.run_id])
    assert live.data.tags[claims.WORKER_TAG].endswith(f":{os.getpid()}")
    # Its heartbeat stopped (the process died): after the timeout the run may be resumed.
    silent = client.get_run(run.info.run_id)
    later = float(silent.data.tags[claims.HEARTBEAT_TAG]) + 6
    assert not claims.is_alive(silent, timeout=5, now=later)
    ready, alive = claims.resumable([silent], has_checkpoint, timeout=0.01, unfinished=("RUNNING",))
    assert [r.info.run_id for r in ready] == [run.info.run_id] and not alive


def _kill_a_search_worker(experiment_id: str, found: dict, stop: threading.Event) -> None:
    """Kill the Ray worker of the first search run that has logged a checkpoint (SIGKILL: no clean-up)."""
    import mlflow

    client = mlflow.MlflowClient()
    while not stop.is_set():
        runs = client.search_runs(
            [experiment_id], "attributes.status = 'RUNNING' and tags.step = 'search_lth'"
        ) + client.search_runs([experiment_id], "attributes.status = 'RUNNING' and tags.step = 'search_full'")
        for r in runs:
            worker = r.data.tags.get(claims.WORKER_TAG, "")
            if worker and any(a.path == "checkpoints" for a in client.list_artifacts(r.info.run_id)):
                os.kill(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)
                found["run_id"] = r.info.run_id
                return
        time.sleep(0.3)


def _genotypes(outputs: dict) -> dict[str, str]:
    from iac import registry

    return {k: registry.resolve(v["cell_uri"]).tags["genotype_json"] for k, v in outputs["searches"].items()}


def test_a_ray_study_finds_the_local_genotypes_and_survives_a_killed_worker(on_server, tmp_path, single_thread):
    import mlflow

    from iac.commands.main import run_main

    common = dict(budget="smoke", seeds=(0, 1), skips=("attention",), data=tmp_path / "prepared", step_cpus=1)
    _experiment("study-local")
    local = run_main(MainConfig(report_dir=tmp_path / "local", **common))

    ray_exp = _experiment("study-ray")
    killed: dict = {}
    stop = threading.Event()
    killer = threading.Thread(target=_kill_a_search_worker, args=(ray_exp, killed, stop), daemon=True)
    killer.start()
    try:
        on_ray = run_main(MainConfig(report_dir=tmp_path / "ray", executor="ray", claim_timeout=5, **common))
    finally:
        stop.set()
        killer.join()

    assert _genotypes(on_ray) == _genotypes(local) and len(_genotypes(local)) == 6  # 2 seeds x full, lth, random
    assert set(on_ray["models"]) == set(local["models"]) and set(on_ray["evaluations"]) == set(local["evaluations"])
    # The killed step was resumed (under a claim) and finished; the study went on to the end.
    assert "run_id" in killed, "no search step was caught running with a checkpoint"
    client = mlflow.MlflowClient()
    dead = client.get_run(killed["run_id"])
    assert dead.info.status != "FINISHED" and claims.CLAIM_PARAM in dead.data.params
    resumed = client.search_runs([ray_exp], f"tags.resumed_from = '{killed['run_id']}'")
    assert len(resumed) == 1 and resumed[0].info.status == "FINISHED"
    assert on_ray["stats"]["run_id"] and Path(tmp_path / "ray").is_dir()
    main_runs = client.search_runs([ray_exp], "tags.step = 'main'")
    assert [r.info.status for r in main_runs] == ["FINISHED"]
