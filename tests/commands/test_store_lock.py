"""New tracking stores under concurrency: parallel first users all succeed; a held lock gives one line."""

from __future__ import annotations

import subprocess
import sys
import time

from killkit import step_env

# Every process opens a new store through the code path each step takes (step_run), logs and finishes.
_FIRST_USER = """
import sys, time
import mlflow
from iac.commands.common import step_run
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # start together, after the imports
with step_run("probe", {"worker": sys.argv[1]}) as run:
    mlflow.log_metric("worker", float(sys.argv[1]))
print("ok", run.info.run_id)
"""


def test_four_parallel_first_users_of_a_new_sqlite_store_all_succeed(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    (tmp_path / "new").mkdir()
    env = {**step_env("Default"), "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri}
    env.pop("MLFLOW_EXPERIMENT_NAME")
    start = time.time() + 15  # after every process has imported mlflow
    procs = [subprocess.Popen([sys.executable, "-c", _FIRST_USER, str(i), str(start)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(4)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs(experiment_ids=["0"])
    assert sorted(r.data.metrics["worker"] for r in runs) == [0.0, 1.0, 2.0, 3.0]
    assert all(r.info.status == "FINISHED" for r in runs)


_HOLDER = """
import sys, time
from filelock import FileLock
with FileLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_store_locked_too_long_stops_with_one_line_and_writes_nothing(tmp_path):
    db = tmp_path / "mlflow.db"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, f"{db}.lock"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        env = {**step_env("Default"), "IAC_STORE_LOCK_TIMEOUT": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "iac.cli", "registry", "list", "--tracking-uri", f"sqlite:///{db}"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [f"Error: tracking store sqlite:///{db} is locked by another process for more than 1 s "
                     f"(lock file {db}.lock); wait for that process or raise IAC_STORE_LOCK_TIMEOUT"], proc.stderr
    assert not db.exists()


def test_lock_files_sit_beside_sqlite_files_and_servers_need_none(tmp_path):
    from iac.commands.store import store_lock_path

    assert store_lock_path(f"sqlite:///{tmp_path}/a.db") == tmp_path / "a.db.lock"
    assert store_lock_path("http://localhost:5000") is None
    assert store_lock_path("databricks") is None
    pg = store_lock_path("postgresql://u@h/db")
    assert pg is not None and pg == store_lock_path("postgresql://u@h/db") != store_lock_path("postgresql://u@h/other")
