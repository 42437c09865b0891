"""``stats`` selects evaluate runs per dataset and evaluated data, and compares each dataset on its own.

Evaluate runs are logged by hand (tags and a per-case file, no network) into
the session's SQLite store, then selected and compared as ``iac stats`` does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iac.commands.stats import find_evaluate_runs, run_stats, selection_key
from iac.config import StatsConfig

N = 12
BASE = np.random.default_rng(7).uniform(0.6, 0.9, N)


def _log_evaluate(tmp: Path, dataset: str, method: str, fingerprint: str, shift: float) -> str:
    """One finished evaluate run of ``method`` on ``dataset``, its per-case scores ``BASE + shift``."""
    import mlflow

    from iac.eval.per_case import save_per_case

    rows = [
        {"patient": f"p{i:02d}", "frame": "", "label": "mean_fg", "dice": d, "hd95": 20 * (1 - d),
         "nsd": (1 + d) / 2, "ref_empty": False, "pred_empty": False}
        for i, d in enumerate(np.clip(BASE + shift, 0, 1))
    ]
    meta = {"empty_policy": "dice1_hd0", "dataset": dataset, "eval_data_fingerprint": fingerprint,
            "data_fingerprint": f"train-{fingerprint}", "restore": "probabilities",
            "nsd_tolerance_mm": {"mean_fg": 2.0}, "method": method, "seed": "0", "backbone": "unet"}
    folder = tmp / f"{dataset}-{method}-{fingerprint}"
    csv = save_per_case(rows, folder / "per_case.csv", meta)
    with mlflow.start_run() as run:
        mlflow.set_tags({"step": "evaluate", "split": "test", "dataset": dataset, "backbone": "unet",
                         "method": method, "seed": "0", "eval_data_fingerprint": fingerprint,
                         "data_fingerprint": f"train-{fingerprint}"})
        mlflow.log_artifact(str(csv))
        mlflow.log_artifact(str(csv.with_suffix(".json")))
    return run.info.run_id


@pytest.fixture
def two_datasets(experiment, tmp_path) -> dict[str, str]:
    """The same methods, seed and backbone evaluated on two datasets in one experiment."""
    return {
        f"{dataset}/{method}": _log_evaluate(tmp_path, dataset, method, f"fp-{dataset}", shift)
        for dataset in ("acdc", "kits")
        for method, shift in (("iac-lth", 0.0), ("identity", -0.05))
    }


def test_two_datasets_in_one_experiment_are_both_selected_and_compared(two_datasets, experiment, tmp_path):
    import mlflow

    ids = find_evaluate_runs(experiment)
    assert sorted(ids) == sorted(two_datasets.values())  # nothing collapses across datasets
    assert find_evaluate_runs(experiment, dataset="kits") == sorted(v for k, v in two_datasets.items() if "kits" in k)
    assert find_evaluate_runs(experiment, fingerprint="fp-acdc") == sorted(
        v for k, v in two_datasets.items() if "acdc" in k
    )
    out = run_stats(StatsConfig(n_boot=100), ids)
    table = Path(mlflow.artifacts.download_artifacts(run_id=out["run_id"], artifact_path="stats.csv", dst_path=str(tmp_path)))
    results = pd.read_csv(table, keep_default_na=False)
    pooled = results[(results["seed"] == "pooled") & (results["metric"] == "dice")]
    assert sorted(pooled["dataset"]) == ["acdc", "kits"] and set(pooled["n"]) == {N}
    tags = mlflow.get_run(out["run_id"]).data.tags
    assert tags["eval_data_fingerprint"] == "fp-acdc,fp-kits" and tags["data_fingerprint"] == "train-fp-acdc,train-fp-kits"


def test_one_dataset_evaluated_on_two_versions_is_refused(two_datasets, experiment, tmp_path):
    newer = _log_evaluate(tmp_path, "acdc", "identity", "fp-acdc-v2", -0.05)  # re-prepared data, one method only
    ids = find_evaluate_runs(experiment, dataset="acdc")
    assert newer in ids and len(ids) == 3  # kept beside, not instead of, the other version's run
    with pytest.raises(ValueError, match="eval_data_fingerprint mismatch.*fp-acdc.*fp-acdc-v2"):
        run_stats(StatsConfig(n_boot=100), ids)
    latest = _log_evaluate(tmp_path, "acdc", "identity", "fp-acdc", -0.04)  # a rerun replaces the older one
    ids = find_evaluate_runs(experiment, fingerprint="fp-acdc")
    assert latest in ids and two_datasets["acdc/identity"] not in ids and len(ids) == 2


def test_selection_key_falls_back_to_the_older_fingerprint_tag():
    old = {"dataset": "acdc", "backbone": "unet", "method": "identity", "seed": "0", "data_fingerprint": "fp"}
    assert selection_key(old) == ("acdc", "fp", "unet", "identity", "0")
    assert selection_key({**old, "eval_data_fingerprint": "fp-eval"})[1] == "fp-eval"
