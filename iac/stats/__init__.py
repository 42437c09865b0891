"""Patient-level paired statistics of evaluate runs (tests, effect sizes, tables, plots)."""

from iac.stats.comparisons import HIGHER_IS_BETTER, compare_methods, compare_pair, headline_metrics
from iac.stats.effect import (
    bootstrap_median_ci,
    hodges_lehmann,
    hodges_lehmann_ci,
    oriented_differences,
    rank_biserial,
    signed_rank_null,
    signed_rank_sums,
    walsh_averages,
)
from iac.stats.inputs import POOLED, EvaluatedRun, StatsError, check_pairing, patient_scores, pool_seeds, stack_runs
from iac.stats.tables import readable_table, to_latex, to_markdown, write_tables
from iac.stats.tests import equivalence_test, false_positive_test, holm, noninferiority_test, signed_rank_test

__all__ = [
    "HIGHER_IS_BETTER",
    "POOLED",
    "EvaluatedRun",
    "StatsError",
    "bootstrap_median_ci",
    "check_pairing",
    "compare_methods",
    "compare_pair",
    "equivalence_test",
    "false_positive_test",
    "headline_metrics",
    "hodges_lehmann",
    "hodges_lehmann_ci",
    "holm",
    "noninferiority_test",
    "oriented_differences",
    "patient_scores",
    "pool_seeds",
    "rank_biserial",
    "readable_table",
    "signed_rank_null",
    "signed_rank_sums",
    "signed_rank_test",
    "stack_runs",
    "to_latex",
    "to_markdown",
    "walsh_averages",
    "write_tables",
]
