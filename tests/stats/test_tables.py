"""stats.csv / stats.md / stats.tex and the figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iac.stats import compare_methods, readable_table, write_tables
from iac.stats.plots import patient_score_figure, search_time_figure
from iac.stats.tables import READABLE_COLUMNS, format_p, latex_escape

BASE = np.random.default_rng(3).uniform(0.6, 0.9, 12)


@pytest.fixture
def results(make_table, fast) -> pd.DataFrame:
    table = make_table(
        {"iac-lth": list(BASE), "iac-full": list(BASE - 0.001), "identity": list(BASE - 0.05)},
        n=12,
        labels=("lv_cavity", "mean_fg"),
    )
    return compare_methods(table, fast)


def test_write_tables_with_expected_columns(results, tmp_path):
    paths = write_tables(results, tmp_path)
    assert {p.name for p in paths.values()} == {"stats.csv", "stats.md", "stats.tex"}
    csv = pd.read_csv(paths["csv"], keep_default_na=False)
    expected = {
        "dataset", "backbone", "metric", "seed", "frame", "label", "reference", "method", "n",
        "hl", "hl_ci_low", "hl_ci_high", "hl_ci_level", "median_diff", "ci_low", "ci_high", "r", "statistic",
        "p", "p_holm", "wilcoxon_method", "zero_method", "p_tost", "equivalent", "margin", "p_ni", "p_ni_holm",
        "noninferior", "ni_margin", "n_ref_empty", "fp_rate_reference", "fp_rate_method", "p_fp", "alpha",
    }
    assert expected <= set(csv.columns) and len(csv) == len(results)
    md = paths["md"].read_text()
    assert "| " + " | ".join(READABLE_COLUMNS) + " |" in md
    assert md.count("## ") == 3  # one table per metric (Holm family)
    assert "| identity | mean_fg | 12 | +0.050 [+0.050, +0.050] |" in md  # HL and its exact interval
    assert "yes (±0.01)" in md and "not tested" in md and "Hodges-Lehmann" in md
    assert "non-inferior" not in md and "FP on empty ref" not in md  # neither tested nor relevant here
    tex = paths["tex"].read_text()
    assert tex.count(r"\begin{tabular}") == 3 and r"lv\_cavity" in tex and "$p_\\mathrm{Holm}$" in tex


def test_non_inferiority_column_appears_where_tested(make_table, fast, tmp_path):
    import dataclasses

    table = make_table({"iac-lth": list(BASE), "identity": list(BASE - 0.05)}, n=12)
    md = write_tables(compare_methods(table, dataclasses.replace(fast, ni_margin=0.1)), tmp_path)["md"].read_text()
    assert "| non-inferior |" in md and "yes (margin 0.1)" in md and "Holm-corrected" in md


def test_readable_table(results):
    table = readable_table(results)
    assert list(table.columns[-len(READABLE_COLUMNS):]) == list(READABLE_COLUMNS)
    assert format_p(0.0004) == "<0.001" and format_p(0.0123) == "0.012"
    assert latex_escape("a_b & 5%") == r"a\_b \& 5\%"
    with pytest.raises(ValueError, match="no comparison results"):
        write_tables(results.iloc[:0], "unused")


def test_figures(make_table, tmp_path):
    from iac.stats import patient_scores

    scores = patient_scores(make_table({"iac-lth": list(BASE), "identity": list(BASE - 0.05)}, n=12))
    for kind in ("box", "violin"):
        fig = patient_score_figure(scores, kind=kind)
        fig.savefig(tmp_path / f"{kind}.png")
        assert (tmp_path / f"{kind}.png").stat().st_size > 0
        assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["iac-lth", "identity"]
    fig = search_time_figure({"iac-full": [1200.0, 1300.0], "iac-lth": 200.0}, baseline="iac-full")
    fig.savefig(tmp_path / "time.png")
    assert any("6.2x faster" in t.get_text() for t in fig.axes[0].texts)
    with pytest.raises(ValueError, match="unknown plot kind"):
        patient_score_figure(scores, kind="bar")
    with pytest.raises(ValueError, match="no scores for label 'rv'"):
        patient_score_figure(scores, label="rv")
    with pytest.raises(ValueError, match="positive finite"):
        search_time_figure({"iac-lth": [0.0]})
    with pytest.raises(ValueError, match="baseline 'full'"):
        search_time_figure({"iac-lth": 1.0}, baseline="full")
