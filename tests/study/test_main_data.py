"""``main`` on a user's own prepared folder, and prepare's options passed through when it prepares."""

from __future__ import annotations

import pytest

from iac.config import BUDGETS, ConfigError, MainConfig, PrepareConfig, parse_prepare_options


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A folder prepared by the user with their own settings (split seed 5)."""
    from iac.data.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("own") / "prepared"
    return prepare_dataset(PrepareConfig(out=out, phantom_patients=8, phantom_size=32, split_seed=5, workers=1),
                           progress=False)


def _cache(experiment):
    import mlflow

    from iac.study.cache import StepCache

    return StepCache(mlflow.get_experiment_by_name(experiment).experiment_id, "code-1", echo=lambda _: None)


def test_a_prepared_folder_is_taken_as_it_is_without_source(prepared, experiment):
    from iac.study.driver import _prepare

    cfg = MainConfig(dataset="acdc", data=prepared.root)  # no source: it is not asked for
    assert cfg.prepared_as_is
    cache = _cache(experiment)
    out = _prepare(cfg, BUDGETS["smoke"], cache, {})
    assert out["fingerprint"] == prepared.fingerprint and out["name"] == prepared.manifest["name"]
    assert out["data"] == str(prepared.root.resolve()) and cache.log == []  # no prepare run, nothing refused


def test_without_source_or_a_prepared_folder_the_error_says_both(tmp_path):
    with pytest.raises(ConfigError, match=r"source.*or data= a folder `prepare` wrote"):
        MainConfig(dataset="acdc", data=tmp_path)


def test_prepare_options_reach_prepare(prepared, experiment, tmp_path):
    from iac.study.driver import _prepare

    options = parse_prepare_options("phantom_patients=8 phantom_size=32 split_seed=5 workers=1")
    cfg = MainConfig(data=tmp_path / "prepared", prepare_options=options)
    out = _prepare(cfg, BUDGETS["smoke"], _cache(experiment), {})
    # The same settings as the user's own preparation: the same prepared data.
    assert out["fingerprint"] == prepared.fingerprint


@pytest.mark.parametrize(
    "text, words",
    [("spacng=1", ["did you mean 'spacing'"]), ("spacing", ["key=value"]), ("slice_size=big", ["slice_size", "int"]),
     ("skip_bad=maybe", ["skip_bad"])],
)
def test_bad_prepare_options_name_the_option(text, words):
    with pytest.raises(ConfigError) as err:
        parse_prepare_options(text)
    assert err.value.field == "prepare_options"
    for w in words:
        assert w in str(err.value)


def test_prepare_options_are_typed():
    assert parse_prepare_options("spacing=1.25 modalities=flair,t1 skip_bad=true ct_clip=1,99") == (
        ("spacing", 1.25), ("modalities", ("flair", "t1")), ("skip_bad", True), ("ct_clip", (1.0, 99.0)),
    )


def test_the_budget_chooses_the_phantom_variant_and_its_test_share(experiment, tmp_path):
    from dataclasses import replace

    from iac.data.store import PreparedDataset
    from iac.study.driver import _prepare

    budget = replace(BUDGETS["smoke"], phantom_variant="testbed", phantom_patients=10, phantom_size=32,
                     phantom_test_fraction=0.5, phantom_val_fraction=0.2)
    cfg_testbed = MainConfig(data=tmp_path / "prepared", prepare_options=(("workers", 1),))
    data = PreparedDataset(_prepare(cfg_testbed, budget, _cache(experiment), {})["data"])
    assert data.manifest["config"]["phantom_variant"] == "testbed"
    assert len(data.patients("test")) == 5 and len(data.patients("val")) == 2
    # prepare_options still win over the budget, and a real dataset never gets the phantom's split
    cfg = MainConfig(data=tmp_path / "classic", prepare_options=(("workers", 1), ("phantom_variant", "classic")))
    classic = PreparedDataset(_prepare(cfg, budget, _cache(experiment), {})["data"])
    assert classic.manifest["config"]["phantom_variant"] == "classic"
    # another cohort prepared over the test bed's folder since: its finished step is not reused blindly,
    # prepare runs again and refuses to replace the other cohort unasked
    cfg_over = MainConfig(data=tmp_path / "prepared",
                          prepare_options=(("workers", 1), ("phantom_variant", "classic"), ("overwrite", True)))
    over = PreparedDataset(_prepare(cfg_over, budget, _cache(experiment), {})["data"])
    assert over.manifest["config"]["phantom_variant"] == "classic"
    with pytest.raises(Exception, match="prepared from other inputs"):
        _prepare(cfg_testbed, budget, _cache(experiment), {})
    from iac.study.driver import _phantom_settings

    assert _phantom_settings(MainConfig(dataset="acdc", source=tmp_path), budget) == {}
