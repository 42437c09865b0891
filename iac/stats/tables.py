"""The results table of :func:`iac.stats.comparisons.compare_methods` as files.

``stats.csv`` keeps every column at full precision (the machine-readable
record); ``stats.md`` and ``stats.tex`` show one readable table per
(dataset, backbone, metric, seed, frame), i.e. per Holm family, with the
columns method, label, n, HL [CI] (the Hodges–Lehmann shift and its exact
interval), r, p, p_holm, equivalent and, where the results hold them,
non-inferior and the false positives on empty reference structures.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from iac.stats.comparisons import FAMILY
from iac.stats.inputs import POOLED

# Column headings of the readable tables, in order; the optional ones follow where results hold them.
READABLE_COLUMNS = ("method", "label", "n", "HL [CI]", "r", "p", "p_holm", "equivalent")
NI_COLUMN = "non-inferior"  # where a non-inferiority margin was set
FP_COLUMN = "FP on empty ref"  # where some reference structure is empty
NUMERIC_COLUMNS = ("n", "r", "p", "p_holm")  # right-aligned
# Decimals of differences per metric (Dice and NSD are fractions, HD95 is in mm).
DIFF_DECIMALS = {"dice": 3, "hd95": 2, "nsd": 3}
R_DECIMALS = 2
P_DECIMALS = 3
# p-values below this print as "<0.001".
P_FLOOR = 10.0 ** -P_DECIMALS
METRIC_TITLES = {"dice": "Dice", "hd95": "HD95 (mm)", "nsd": "NSD"}
FILES = {"csv": "stats.csv", "md": "stats.md", "tex": "stats.tex"}
_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "±": r"$\pm$",
}


def format_p(p: float) -> str:
    """A p-value with :data:`P_DECIMALS` decimals, ``"<0.001"`` below that."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "–"
    return f"<{P_FLOOR:.{P_DECIMALS}f}" if p < P_FLOOR else f"{p:.{P_DECIMALS}f}"


def _signed(x: float, decimals: int) -> str:
    return f"{x:+.{decimals}f}"


def _equivalent(value: Any, margin: float) -> str:
    if value is None or pd.isna(value):
        return "not tested"
    return f"{'yes' if bool(value) else 'no'} (±{margin:g})"


def _noninferior(value: Any, margin: float) -> str:
    if value is None or pd.isna(value):
        return "not tested"
    return f"{'yes' if bool(value) else 'no'} (margin {margin:g})"


def _false_positives(row: Any) -> str:
    """``"0.00 vs 1.00 (p 0.016, 7 patients)"``: reference vs method false-positive rates."""
    n = int(getattr(row, "n_ref_empty", 0) or 0)
    if n == 0:
        return "–"
    return f"{row.fp_rate_reference:.2f} vs {row.fp_rate_method:.2f} (p {format_p(row.p_fp)}, {_count(n, 'patient')})"


def table_columns(results: pd.DataFrame) -> list[str]:
    """The readable columns of ``results``: :data:`READABLE_COLUMNS` and the optional ones it holds."""
    columns = list(READABLE_COLUMNS)
    if "noninferior" in results.columns and results["noninferior"].notna().any():
        columns.append(NI_COLUMN)
    if "n_ref_empty" in results.columns and (results["n_ref_empty"] > 0).any():
        columns.append(FP_COLUMN)
    return columns


def readable_table(results: pd.DataFrame) -> pd.DataFrame:
    """Readable strings per result row: the family keys and :func:`table_columns`."""
    rows = []
    for row in results.itertuples(index=False):
        dec = DIFF_DECIMALS.get(row.metric, DIFF_DECIMALS["dice"])
        shift = f"{_signed(row.hl, dec)} [{_signed(row.hl_ci_low, dec)}, {_signed(row.hl_ci_high, dec)}]"
        rows.append(
            {
                **{k: getattr(row, k) for k in FAMILY},
                "method": row.method,
                "label": row.label,
                "n": int(row.n),
                "HL [CI]": shift,
                "r": _signed(row.r, R_DECIMALS),
                "p": format_p(row.p),
                "p_holm": format_p(row.p_holm),
                "equivalent": _equivalent(row.equivalent, row.margin),
                NI_COLUMN: _noninferior(getattr(row, "noninferior", None), getattr(row, "ni_margin", math.nan)),
                FP_COLUMN: _false_positives(row),
            }
        )
    return pd.DataFrame(rows, columns=[*FAMILY, *table_columns(results)])


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _families(results: pd.DataFrame):
    """``(title, caption, family rows)`` per Holm family, in the results' order."""
    for key, group in results.groupby(list(FAMILY), sort=False):
        fam = dict(zip(FAMILY, key))
        first = group.iloc[0]
        seeds = "seed-mean per patient" if fam["seed"] == POOLED else f"seed {fam['seed']}"
        frame = f", frame {fam['frame']}" if fam["frame"] else ""
        name = " / ".join(x for x in (fam["dataset"], fam["backbone"]) if x) or "results"
        title = f"{name}: {METRIC_TITLES.get(fam['metric'], fam['metric'])} ({seeds}{frame})"
        level = round(100 * float(first.ci_level))
        caption = (
            f"Reference {first.reference} vs each method, per patient (n pairs). "
            f"Differences are positive when {first.reference} is better "
            f"({'reference - method' if first.better == 'higher' else 'method - reference'}); "
            f"HL: Hodges-Lehmann estimate of the pseudo-median difference with its exact {level} % CI "
            f"(Walsh averages: the shifts the signed-rank test does not reject); r: matched-pairs rank-biserial; "
            f"p: two-sided Wilcoxon signed-rank (zero_method={first.zero_method}, "
            f"{'/'.join(sorted(set(group.wilcoxon_method)))}); p_holm: Holm over the "
            f"{_count(int(first.holm_family_size), 'test')} of this table; equivalent: TOST at alpha={first.alpha:g}"
            + _optional_caption(group)
            + "."
        )
        yield title, caption, group


def _optional_caption(group: pd.DataFrame) -> str:
    """Caption parts of the optional columns the family holds."""
    parts = ""
    if "noninferior" in group.columns and group["noninferior"].notna().any():
        parts += (
            "; non-inferior: one-sided signed-rank test that the reference is worse by less than the margin, "
            "Holm-corrected over this table"
        )
    if "n_ref_empty" in group.columns and (group["n_ref_empty"] > 0).any():
        parts += (
            "; FP on empty ref: share of a patient's cases with an empty reference structure where it was "
            "predicted, reference vs method, mean over those patients, with a two-sided sign test"
        )
    return parts


def to_markdown(results: pd.DataFrame) -> str:
    """One Markdown table per Holm family, each under a heading with its caption."""
    readable = readable_table(results)
    columns = table_columns(results)
    parts = ["# Paired patient-level comparisons", ""]
    for title, caption, group in _families(results):
        table = readable.loc[group.index, columns]
        parts += [f"## {title}", "", caption, ""]
        parts.append("| " + " | ".join(columns) + " |")
        align = ("---:" if c in NUMERIC_COLUMNS else "---" for c in columns)
        parts.append("|" + "|".join(align) + "|")
        for values in table.itertuples(index=False):
            parts.append("| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |")
        parts.append("")
    return "\n".join(parts)


def latex_escape(text: Any) -> str:
    """Escape LaTeX's special characters in ``text``."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(results: pd.DataFrame) -> str:
    """One booktabs ``table`` per Holm family (needs ``\\usepackage{booktabs}``)."""
    readable = readable_table(results)
    columns = table_columns(results)
    parts = [r"% Paired patient-level comparisons; requires \usepackage{booktabs}"]
    for title, caption, group in _families(results):
        table = readable.loc[group.index, columns]
        parts += [
            r"\begin{table}[ht]",
            r"\centering",
            rf"\caption{{{latex_escape(title)}. {latex_escape(caption)}}}",
            r"\begin{tabular}{" + "".join("r" if c in NUMERIC_COLUMNS else "l" for c in columns) + "}",
            r"\toprule",
            " & ".join(latex_escape(c) for c in columns).replace("p\\_holm", r"$p_\mathrm{Holm}$") + r" \\",
            r"\midrule",
        ]
        for values in table.itertuples(index=False):
            parts.append(" & ".join(latex_escape(v) for v in values) + r" \\")
        parts += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(parts)


def write_tables(results: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """Write ``stats.csv``, ``stats.md`` and ``stats.tex`` into ``out_dir``.

    Returns:
        ``{"csv": path, "md": path, "tex": path}``.
    """
    if results.empty:
        raise ValueError("no comparison results to write")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / name for kind, name in FILES.items()}
    results.to_csv(paths["csv"], index=False, float_format="%.10g")
    paths["md"].write_text(to_markdown(results), encoding="utf-8")
    paths["tex"].write_text(to_latex(results), encoding="utf-8")
    return paths
