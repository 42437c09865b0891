"""``prepare`` as a child run of the study, recording its outputs for the step cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from iac.commands.common import step_run, tracker_for
from iac.commands.prepare import run_prepare
from iac.config import PrepareConfig
from iac.study.cache import OUTPUTS_TAG


def prepare_step(cfg: PrepareConfig, tags: dict[str, str]) -> dict[str, Any]:
    """Prepare the dataset inside its own child run; returns its outputs.

    Returns:
        ``run_id``, ``data`` (the prepared folder, absolute), ``fingerprint`` and ``name``.
    """
    with step_run("prepare", {"dataset": cfg.dataset, **tags}, run_name=f"prepare-{cfg.dataset}",
                  system_metrics=True) as run:
        res = run_prepare(cfg)
        outputs = {
            "run_id": run.info.run_id,
            "data": str(Path(res.root).resolve()),
            "fingerprint": res.fingerprint,
            "name": res.manifest["name"],
        }
        tracker_for(run).set_tags({OUTPUTS_TAG: json.dumps(outputs)})
    return outputs


def prepared_as_is(folder: Path) -> dict[str, Any]:
    """A folder ``prepare`` wrote (with the user's own settings), taken as it is: no prepare run.

    Returns:
        The outputs a prepare step would give (``run_id`` None).

    Raises:
        ValueError: the folder is not a valid prepared dataset.
    """
    from iac.data.layouts.base import DataError
    from iac.data.store import PreparedDataset

    try:
        ds = PreparedDataset(folder)
    except DataError as err:
        raise ValueError(f"data={folder}: {err}") from err
    return {"run_id": None, "data": str(Path(folder).resolve()), "fingerprint": ds.fingerprint, "name": ds.name}
