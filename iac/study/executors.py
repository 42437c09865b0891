"""How ``main`` runs the study graph: here, one step after another, or as Ray tasks.

Both executors run the same :class:`iac.study.driver.Node` calls, and every
call goes through the same step cache (:mod:`iac.study.cache`): a finished
step is reused, an unfinished one resumed under a claim
(:mod:`iac.study.claims`), whichever executor or host ran it before.

- :class:`LocalExecutor` runs the nodes in the graph's order in this process.
- :class:`RayExecutor` submits every node as a Ray task declaring its CPUs and
  GPUs, with the tasks' results as the arguments of the tasks that depend on
  them, so Ray starts each step once its inputs exist and runs independent
  steps (seeds, methods, skip baselines, evaluations) side by side. A worker
  that dies is replaced and its task retried; the retried step resumes the dead
  run from its checkpoint once its heartbeat has stopped.

With Ray across hosts, the tracking store must be a shared server and the
prepared data folder on a shared file system (the same path on every host).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from iac.config import MainConfig

if TYPE_CHECKING:
    from iac.study.driver import Node, StudySteps

_PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Times Ray retries a step whose worker died (the retry resumes from the checkpoint).
WORKER_DEATH_RETRIES = 3
# Environment variable carrying the claim timeout to the processes that send heartbeats.
CLAIM_TIMEOUT_ENV = "IAC_CLAIM_TIMEOUT_S"


def set_threads(n: int | None) -> None:
    """Use ``n`` torch threads in this process (None: leave torch's default)."""
    if n:
        import torch

        torch.set_num_threads(n)


class LocalExecutor:
    """Runs every node in this process, in the graph's order."""

    def __init__(self, cfg: MainConfig) -> None:
        self.cfg = cfg

    def run(self, nodes: list["Node"], steps: "StudySteps") -> dict[str, dict]:
        """Outputs of every node, by name."""
        set_threads(self.cfg.step_cpus)
        done: dict[str, dict] = {}
        for n in nodes:
            done[n.name] = n.call(steps, {d: done[d] for d in n.deps})
        return done


def _ray_step(node: "Node", steps: "StudySteps", tracking_uri: str, dep_names: list[str], *dep_results: Any) -> tuple[dict, list]:
    """One node inside a Ray worker: returns (outputs, the step cache's log records)."""
    import mlflow

    # A worker started under `mlflow run` inherits its MLFLOW_RUN_ID: the step opens a run of its own.
    os.environ.pop("MLFLOW_RUN_ID", None)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_experiment(experiment_id=steps.cache.experiment_id)
    set_threads(steps.cfg.step_cpus or 1)
    cache = replace(steps.cache, log=[])
    study = steps.tags.get("iac_study")
    tags = {**steps.tags, **({"mlflow.parentRunId": study} if study else {})}  # shown under the main run
    local = replace(steps, cache=cache, tags=tags)
    outputs = node.call(local, {name: res[0] for name, res in zip(dep_names, dep_results)})
    return outputs, cache.log


class RayExecutor:
    """Submits the nodes as Ray tasks with declared resources, in dependency order."""

    def __init__(self, cfg: MainConfig, echo: Callable[[str], None]) -> None:
        import ray

        self.cfg, self.echo, self.ray = cfg, echo, ray
        env = {
            CLAIM_TIMEOUT_ENV: str(cfg.claim_timeout),
            "MLFLOW_DISABLE_TELEMETRY": os.environ.get("MLFLOW_DISABLE_TELEMETRY", "true"),
            # The project (also when run from a checkout without installing it).
            "PYTHONPATH": os.pathsep.join(p for p in (str(_PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p),
        }
        address = cfg.ray_address or None
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=True, include_dashboard=False,
                 configure_logging=False)
        res = ray.cluster_resources()
        echo(f"ray: {'cluster ' + cfg.ray_address if address else 'a local cluster'} with "
             f"{res.get('CPU', 0):g} CPUs and {res.get('GPU', 0):g} GPUs; each step asks for "
             f"{cfg.step_cpus or 1} CPU(s) and, when it trains or predicts, {cfg.step_gpus:g} GPU(s)")

    def run(self, nodes: list["Node"], steps: "StudySteps") -> dict[str, dict]:
        """Submit every node; returns the outputs of every node by name once all have finished."""
        import mlflow

        ray = self.ray
        task = ray.remote(_ray_step)
        uri = mlflow.get_tracking_uri()
        refs: dict[str, Any] = {}
        for n in nodes:
            refs[n.name] = task.options(
                name=n.name,
                num_cpus=self.cfg.step_cpus or 1,
                num_gpus=self.cfg.step_gpus if n.accelerated else 0,
                max_retries=WORKER_DEATH_RETRIES,
                retry_exceptions=False,
            ).remote(n, steps, uri, list(n.deps), *(refs[d] for d in n.deps))
        results = dict(zip(refs, ray.get(list(refs.values()))))
        for n in nodes:  # the step log in the graph's order
            steps.cache.log.extend(results[n.name][1])
        return {name: res[0] for name, res in results.items()}

    def close(self) -> None:
        self.ray.shutdown()


@contextlib.contextmanager
def make_executor(cfg: MainConfig, echo: Callable[[str], None]) -> Iterator[Any]:
    """The executor ``cfg.executor`` names (a Ray connection is closed on exit)."""
    before = os.environ.get(CLAIM_TIMEOUT_ENV)
    os.environ[CLAIM_TIMEOUT_ENV] = str(cfg.claim_timeout)  # the heartbeats of this process's steps follow it
    try:
        if cfg.executor == "local":
            yield LocalExecutor(cfg)
            return
        executor = RayExecutor(cfg, echo)
        try:
            yield executor
        finally:
            executor.close()
    finally:
        if before is None:
            os.environ.pop(CLAIM_TIMEOUT_ENV, None)
        else:
            os.environ[CLAIM_TIMEOUT_ENV] = before
