"""The step cache: reuse a finished run of a step, resume an unfinished one, or launch it.

Before a step is launched, its *step key* — a hash of the step name, its
parameters (the prepared data's fingerprint included) and the code version —
is looked up among the experiment's runs: a FINISHED run with that key is
reused (its recorded outputs are returned in milliseconds); otherwise the
newest unfinished one (FAILED, KILLED, or RUNNING after a crash) not yet
taken over is handed to the step as ``resume``, and the step continues from
the newest checkpoint on that run's ``resumed_from`` chain, or starts afresh
when the chain left none (:mod:`iac.commands.resume`); otherwise the step
runs. The unfinished runs of the step are then marked KILLED, tagged with
the run that superseded them.
A RUNNING run whose process still sends heartbeats is waited for instead, and
a run is handed to a step only by the worker that claimed it
(:mod:`iac.study.claims`), so workers sharing a store never run a step twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from iac.commands.resume import SUPERSEDED_TAG, take_over
from iac.study import claims

_logger = logging.getLogger(__name__)

# Run tags the cache reads: the step key, and the outputs a finished step recorded (JSON).
STEP_KEY_TAG = "iac_step_key"
OUTPUTS_TAG = "iac_outputs"
# Run tag that ties a step to the ``main`` run of its study.
STUDY_TAG = "iac_study"
# Run states of a step that did not finish (a resume continues the newest).
UNFINISHED = ("FAILED", "KILLED", "RUNNING")


def step_key(step: str, params: dict[str, Any], code: str) -> str:
    """Cache key of one step: its name, every parameter that changes its result, and the code version."""
    blob = json.dumps({"step": step, "params": params, "code": code}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass
class StepOutcome:
    """What one :meth:`StepCache.run` call returned."""

    outputs: dict[str, Any]
    reused: bool
    seconds: float


@dataclass
class StepCache:
    """Finds finished or resumable runs of a step by its key.

    Attributes:
        experiment_id: the experiment whose runs are searched.
        code: the code version (:func:`iac.study.code_version.code_version`).
        log: one record per call (``step``, ``run_id``, ``reused``, ``seconds``, and
            ``original_seconds``: the wall time of the run that did the work, for a
            reused step the finished run's), in call order.
        echo: where the one-line progress messages go.
        claim_timeout: seconds without a heartbeat after which a RUNNING run is dead and may be resumed.
        poll_seconds: how often a step that another worker runs is looked up again.
    """

    experiment_id: str
    code: str
    log: list[dict[str, Any]] = field(default_factory=list)
    echo: Callable[[str], None] = _logger.info
    claim_timeout: float = claims.DEFAULT_CLAIM_TIMEOUT_S
    poll_seconds: float = 5.0

    def run(
        self,
        step: str,
        label: str,
        params: dict[str, Any],
        launch: Callable[[dict[str, str], str | None], dict[str, Any]],
        validate: Callable[[dict[str, Any]], bool] | None = None,
    ) -> StepOutcome:
        """Reuse, resume or launch one step.

        Args:
            step: step name (``retrain``, ``search_lth``, ...).
            label: human-readable name of this particular call.
            params: every parameter that changes the step's result.
            launch: ``launch(extra_tags, resume_run_id) -> outputs`` runs the step.
            validate: checks that reused outputs still exist (e.g. a folder).
        """
        key = step_key(step, params, self.code)
        t0 = time.perf_counter()
        token, waiting = claims.worker_token(), None
        while True:
            runs = _runs_with_key(self.experiment_id, key)
            for r in runs:
                if r.info.status == "FINISHED" and OUTPUTS_TAG in r.data.tags:
                    outputs = json.loads(r.data.tags[OUTPUTS_TAG])
                    if validate is None or validate(outputs):
                        secs = time.perf_counter() - t0
                        self.echo(f"  = {label}: reusing finished run {r.info.run_id[:8]}")
                        self.log.append({"step": label, "run_id": r.info.run_id, "reused": True, "seconds": secs,
                                         "original_seconds": _run_seconds(r)})
                        return StepOutcome(outputs, True, secs)
            # Hand the newest unfinished run nobody took over to the step, under a claim (the step follows its
            # resumed_from chain to a checkpoint, or starts afresh); wait for a live one (another worker runs it).
            open_runs = [r for r in runs if SUPERSEDED_TAG not in r.data.tags]
            ready, alive = claims.resumable(open_runs, lambda run_id: True, self.claim_timeout, UNFINISHED)
            resume = next((r.info.run_id for r in ready if claims.claim(r.info.run_id, token)), None)
            if resume is None and (alive or ready):  # a live run, or a claim just taken by another worker
                if alive and waiting != alive[0].info.run_id:
                    waiting = alive[0].info.run_id
                    self.echo(f"  ~ {label}: run {waiting[:8]} is running elsewhere; waiting for it")
                time.sleep(self.poll_seconds)
                continue
            break
        live = {r.info.run_id for r in alive}
        unfinished = [r for r in open_runs if r.info.status in UNFINISHED and r.info.run_id not in live]
        self.echo(f"  > {label}: {'resuming run ' + resume[:8] if resume else 'running'}")
        outputs = launch({STEP_KEY_TAG: key}, resume)
        if outputs.get("run_id"):
            take_over([r.info.run_id for r in unfinished], outputs["run_id"])
        secs = time.perf_counter() - t0
        self.log.append({"step": label, "run_id": outputs.get("run_id"), "reused": False, "seconds": secs,
                         "original_seconds": secs})
        return StepOutcome(outputs, False, secs)


def _run_seconds(run) -> float:
    """A finished run's wall time (end minus start), in seconds."""
    if not run.info.end_time or not run.info.start_time:
        return float("nan")
    return (run.info.end_time - run.info.start_time) / 1000.0


def _runs_with_key(experiment_id: str, key: str) -> list:
    """The experiment's runs tagged with ``key``, newest first."""
    import mlflow

    return mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.{STEP_KEY_TAG} = '{key}'",
        output_format="list",
        order_by=["attributes.start_time DESC"],
    )
