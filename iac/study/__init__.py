"""The ``main`` driver: the whole study for one dataset, reusing finished steps.

- :mod:`iac.study.budget`: the named budget with the study's overrides applied;
- :mod:`iac.study.code_version`: the version of the code that computes a step;
- :mod:`iac.study.cache`: the step cache (reuse a finished run, resume an unfinished one);
- :mod:`iac.study.prepare_step`: ``prepare`` as a child run of the study;
- :mod:`iac.study.driver`: the sequence of steps;
- :mod:`iac.study.report`: the Markdown report with its figures.

The driver calls the step runners of :mod:`iac.commands` (each opens its own
MLflow run); nothing in the core packages imports this one.
"""
