"""``main`` end to end with the smoke budget, then again with every step reused."""

from __future__ import annotations

import time

import pytest

from iac.config import MainConfig


@pytest.fixture(scope="module")
def study(tmp_path_factory, mlflow_store):
    import mlflow

    from iac.commands.main import run_main

    root = tmp_path_factory.mktemp("main")
    exp = mlflow.create_experiment("main-smoke", artifact_location=(root / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=exp)
    cfg = MainConfig(budget="smoke", data=root / "prepared", report_dir=root / "outputs")
    t0 = time.perf_counter()
    first = run_main(cfg)
    first_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = run_main(cfg)
    second_seconds = time.perf_counter() - t0
    return {"cfg": cfg, "first": first, "second": second, "t1": first_seconds, "t2": second_seconds, "exp": exp, "root": root}


def test_study_compares_lth_with_every_method(study):
    import mlflow

    st = study["first"]["stats"]
    assert set(st["methods"]) == {
        "iac-lth", "iac-full", "iac-random", "identity", "identity-extra", "attention", "residual", "dense"
    }
    md = mlflow.artifacts.download_artifacts(run_id=st["run_id"], artifact_path="stats.md")
    text = open(md).read()
    for method in ("iac-full", "attention", "residual", "dense", "identity"):
        assert f"| {method} |" in text
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(st["run_id"])}
    assert {"stats.csv", "stats.md", "stats.tex"} <= arts


def test_every_step_is_a_child_run_with_tags(study):
    import mlflow

    runs = mlflow.search_runs(experiment_ids=[study["exp"]], output_format="list")
    steps = [r for r in runs if r.data.tags.get("step") != "main"]
    mains = [r for r in runs if r.data.tags.get("step") == "main"]
    assert len(mains) == 2
    assert all("mlflow.parentRunId" in r.data.tags for r in steps)
    assert {r.data.tags["step"] for r in steps} >= {
        "prepare", "retrain", "search_full", "search_lth", "random_cell", "evaluate", "stats"
    }
    for r in steps:
        if r.data.tags["step"] in ("retrain", "evaluate", "search_full", "search_lth"):
            assert r.data.tags.get("dataset") == "phantom" and r.data.tags.get("backbone") == "unet"


def test_rerun_reuses_every_step_in_seconds(study):
    assert study["second"]["models"] == study["first"]["models"]
    assert study["second"]["stats"]["run_id"] == study["first"]["stats"]["run_id"]
    assert study["t2"] < 30  # reuse costs registry and run look-ups only


def test_report_written_and_logged(study):
    import mlflow

    report = next((study["root"] / "outputs").glob("phantom-*/report.md"))
    text = report.read_text()
    assert "Paired per-patient comparisons" in text and "Search time" in text
    assert "smoke-sized" in text
    mains = mlflow.search_runs(
        experiment_ids=[study["exp"]], filter_string="tags.step = 'main'", output_format="list"
    )
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(mains[0].info.run_id, "report")}
    assert "report/report.md" in arts


def test_the_reports_show_the_cells_and_a_rerun_the_original_study_time(study):
    texts = [r.read_text() for r in sorted((study["root"] / "outputs").glob("phantom-*/report.md"))]
    assert len(texts) == 2
    assert all("## Cells" in t and "figures/cells/lth-0/cell.png" in t for t in texts)
    assert sum("original study time" in t for t in texts) == 1  # the rerun, which reused every step
