"""The study report renders from the steps' outputs and the runs they name."""

from __future__ import annotations

import json
from pathlib import Path


from iac.config import BUDGETS, MainConfig
from iac.study.report import write_report
from iac.tracking import MemoryTracker

STEPS = [
    {"step": "prepare", "run_id": "abcdef123456", "reused": True, "seconds": 0.01},
    {"step": "baseline U-Net", "run_id": None, "reused": False, "seconds": 12.34},
]


def _outputs(searches: dict | None = None, stats: dict | None = None) -> dict:
    return {
        "data": "/data/prepared/phantom",
        "fingerprint": "0123456789abcdef",
        "models": {"identity": "models:/iac-unet-phantom-unet/1", "iac-lth/seed0": "models:/iac-unet-phantom-unet/2"},
        "searches": searches
        or {
            "full-0": {"search_seconds": 40.0, "epochs_run": 3, "genotype": "G-full"},
            "lth-0": {"search_seconds": 10.0, "epochs_run": 1, "genotype": "G-lth"},
        },
        "evaluations": {"identity": {"dice": 0.7}, "iac-lth/seed0": {"dice": 0.8, "nsd": 0.85}},
        "stats": stats or {},
    }


def _write(tmp_path, outputs: dict, budget: str = "smoke", tracker=None):
    cfg = MainConfig(budget=budget, report_dir=tmp_path)
    tracker = tracker or MemoryTracker()
    report = write_report(cfg, BUDGETS[budget], outputs, STEPS, 75.0, tmp_path, tracker)
    return report, report.read_text(), tracker


def test_the_report_renders_its_tables_from_the_outputs(tmp_path):
    report, text, tracker = _write(tmp_path, _outputs())
    folder = tmp_path / "phantom-local"  # no tracked run: the study is "local"
    assert report == folder / "report.md"
    assert text.startswith("# IAC-LTH study: phantom, unet\n")
    assert "- budget: **smoke** (a smoke-sized study" in text and "study wall time 75 s" in text
    assert "fingerprint `0123456789ab`" in text
    # Test Dice and NSD, best method first; an evaluation without NSD shows a dash.
    assert text.index("| iac-lth/seed0 | 0.8000 | 0.8500 |") < text.index("| identity | 0.7000 | – |")
    assert "| 0 | 40.0 | 3 | 10.0 | 1 | 4.00x | `G-full` | `G-lth` |" in text
    assert (folder / "figures" / "search_time.png").stat().st_size > 0
    assert "| identity | `models:/iac-unet-phantom-unet/1` |" in text
    assert "| prepare | `abcdef12` | yes | 0.0 |" in text and "| baseline U-Net | `` | no | 12.3 |" in text
    assert "Paired per-patient comparisons" not in text  # no stats run
    assert json.loads((folder / "study.json").read_text())["steps"] == STEPS
    assert tracker.artifacts == {"report/phantom-local": folder}


def test_a_paper_study_is_not_called_smoke_sized_and_a_rewrite_replaces_the_folder(tmp_path):
    _write(tmp_path, _outputs())
    stale = tmp_path / "phantom-local" / "figures" / "stale.png"
    stale.write_bytes(b"old")
    _, text, _ = _write(tmp_path, _outputs(searches={"random-0": {"cell_uri": "models:/c/1"}}), budget="paper")
    assert "- budget: **paper**\n" in text
    assert not stale.exists()
    assert "Search time" not in text  # no full/LTH pair


def test_the_report_gathers_stats_and_search_figures_from_their_runs(tmp_path, experiment):
    import mlflow

    png = tmp_path / "png"
    png.mkdir()
    (png / "pvalues.png").write_bytes(b"\x89PNG")
    (png / "op_weights.png").write_bytes(b"\x89PNG")
    with mlflow.start_run() as stats_run:
        mlflow.log_text("| method | p |\n|---|---|\n| iac-full | 0.5 |\n", "stats.md")
        mlflow.log_artifact(str(png / "pvalues.png"), "plots")
    with mlflow.start_run() as lth_run:
        mlflow.log_artifact(str(png / "op_weights.png"), "plots")
        mlflow.log_metrics({"speedup_vs_full": 2.5, "genotype_agreement": 0.75})
    with mlflow.start_run() as full_run:  # logged no plots: its section is left out, the report still written
        pass
    searches = {
        "full-0": {"run_id": full_run.info.run_id, "search_seconds": 40.0, "epochs_run": 3, "genotype": "G-full"},
        "lth-0": {"run_id": lth_run.info.run_id, "search_seconds": 16.0, "epochs_run": 1, "genotype": "G-lth"},
        "random-0": {"run_id": lth_run.info.run_id},  # random cells have no trajectories
    }
    _, text, _ = _write(tmp_path / "out", _outputs(searches, {"run_id": stats_run.info.run_id}))
    folder = tmp_path / "out" / "phantom-local"
    assert "## Paired per-patient comparisons\n\n| method | p |\n|---|---|\n| iac-full | 0.5 |\n" in text
    assert "![pvalues](figures/plots/pvalues.png)" in text and (folder / "figures" / "plots" / "pvalues.png").is_file()
    assert "| 0 | 40.0 | 3 | 16.0 | 1 | 2.50x |" in text
    assert "## Search lth-0\n\nspeed-up over the full search 2.50x; genotype agreement 0.75\n" in text
    assert "![lth-0 op_weights](figures/lth-0/plots/op_weights.png)" in text
    assert (folder / "figures" / "lth-0" / "plots" / "op_weights.png").is_file()
    assert "## Search full-0" not in text and "## Search random-0" not in text


def test_the_report_shows_every_cell_diagram_once(tmp_path, experiment, monkeypatch):
    import mlflow

    png = tmp_path / "png"
    png.mkdir()
    (png / "cell.png").write_bytes(b"\x89PNG")
    (png / "op_weights.png").write_bytes(b"\x89PNG")
    runs = {}
    for key in ("full-0", "random-0"):
        with mlflow.start_run() as run:
            mlflow.log_artifact(str(png / "cell.png"), "plots")
            if key == "full-0":
                mlflow.log_artifact(str(png / "op_weights.png"), "plots")
        runs[key] = run.info.run_id
    searches = {
        "full-0": {"run_id": runs["full-0"], "search_seconds": 4.0, "epochs_run": 3, "genotype": "G-full",
                   "cell_uri": "models:/iac-cell-phantom-unet/1"},
        "random-0": {"run_id": runs["random-0"], "genotype": "G-random", "cell_uri": "models:/iac-cell-phantom-unet/2"},
    }
    monkeypatch.chdir(tmp_path)  # a relative report_dir, as main's default `outputs`
    _, text, _ = _write(Path("out"), _outputs(searches))
    folder = tmp_path / "out" / "phantom-local"
    assert "## Cells" in text
    assert "### full-0: `models:/iac-cell-phantom-unet/1`" in text and "`G-random`" in text
    for key in searches:
        assert f"![cell {key}](figures/cells/{key}/cell.png)" in text
        assert (folder / "figures" / "cells" / key / "cell.png").is_file()
    assert text.count("cell.png") == 2  # not again among the search's plots
    assert "![full-0 op_weights](figures/full-0/plots/op_weights.png)" in text


def test_a_reused_study_reports_the_original_time_and_the_reruns(tmp_path):
    reused = [
        {"step": "prepare", "run_id": "a" * 12, "reused": True, "seconds": 0.2, "original_seconds": 30.0},
        {"step": "baseline U-Net", "run_id": "b" * 12, "reused": True, "seconds": 0.3, "original_seconds": 600.0},
    ]
    cfg = MainConfig(budget="smoke", report_dir=tmp_path)
    report = write_report(cfg, BUDGETS["smoke"], _outputs(), reused, 2.0, tmp_path, MemoryTracker())
    text = report.read_text()
    assert ("study wall time 2 s (2 of 2 steps reused); original study time 630 s "
            "(the runs that did each step's work)") in text
