"""Run a step as its own process (optionally killed at a fault point) and find its MLflow run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Launch:
    """One step process: its exit code, its output and the run it started (newest run of the step)."""

    returncode: int
    output: str
    run_id: str | None

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL


def step_env(experiment: str, fault: str | None = None) -> dict[str, str]:
    """The environment of a step process: this session's store, one thread, the fault switch."""
    # The test process's own experiment and run (set by mlflow.set_experiment / start_run) stay behind.
    env = {k: v for k, v in os.environ.items() if k not in ("IAC_FAULT", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID")}
    env.update({
        "MLFLOW_EXPERIMENT_NAME": experiment,
        "OMP_NUM_THREADS": "1",  # the same thread count in every process: identical arithmetic
        "PYTHONPATH": str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    })
    if fault:
        env["IAC_FAULT"] = fault
    return env


def launch(step: str, args: list[str], experiment: str, fault: str | None = None, timeout: float = 400) -> Launch:
    """Run ``python -m iac.cli <step> <args>``; return its exit code, output and newest ``step`` run."""
    import mlflow

    proc = subprocess.run(
        [sys.executable, "-m", "iac.cli", step, *args], cwd=PROJECT_ROOT, env=step_env(experiment, fault),
        capture_output=True, text=True, timeout=timeout,
    )
    exp = mlflow.get_experiment_by_name(experiment)
    runs = mlflow.search_runs(
        experiment_ids=[exp.experiment_id], filter_string=f"tags.step = '{step}'", output_format="list",
        order_by=["attributes.start_time DESC"], max_results=1,
    ) if exp is not None else []
    return Launch(proc.returncode, proc.stdout + proc.stderr, runs[0].info.run_id if runs else None)
