"""A registered cell is a small loadable model: loading gives the genotype, predict its JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from iac.nas.genotype import Genotype, SearchSpace, random_genotype


def _register(geno: Genotype, name: str, tmp_path, diagram: bool = True):
    import mlflow

    from iac import registry
    from iac.nas.diagram import cell_figure

    png = None
    if diagram:
        png = tmp_path / "cell.png"
        cell_figure(geno).savefig(png)
    with mlflow.start_run() as run:
        ref = registry.register_genotype(run.info.run_id, geno.to_json(), name, {"method": "full", "seed": 0},
                                         diagram=png)
    return ref


def test_a_registered_cell_loads_as_a_pyfunc_model(experiment, tmp_path):
    import mlflow

    from iac import registry

    geno = random_genotype(SearchSpace(nodes=3), np.random.default_rng(0))
    ref = _register(geno, "iac-cell-test-loadable", tmp_path)
    assert ref.tags["method"] == "full" and Genotype.from_json(ref.tags["genotype_json"]) == geno
    model = mlflow.pyfunc.load_model(ref.uri)
    assert model.unwrap_python_model().genotype == geno
    assert Genotype.from_json(model.predict(None)) == geno
    assert json.loads(model.predict({"anything": 1})) == json.loads(geno.to_json())
    # The diagram is stored with the version.
    local = mlflow.artifacts.download_artifacts(ref.uri)
    assert any(p.name == "cell.png" for p in __import__("pathlib").Path(local).rglob("*.png"))
    # Every URI form reaches it: version, alias, and the logged model's id.
    mlflow.MlflowClient().set_registered_model_alias(ref.name, "champion", ref.version)
    model_id = ref.model_id
    assert model_id and model_id.startswith("m-")
    for uri in (ref.uri, f"models:/{ref.name}@champion", f"models:/{model_id}"):
        assert registry.load_cell(uri) == geno, uri
        assert registry.resolve(uri).version == ref.version, uri
    assert mlflow.pyfunc.load_model(f"models:/{model_id}").unwrap_python_model().genotype == geno


def test_a_genotype_too_long_for_a_tag_is_stored_whole(experiment, tmp_path):
    from iac import registry

    space = SearchSpace(nodes=24, per_level=True, steps_per_node=2)
    geno = random_genotype(space, np.random.default_rng(1), n_levels=5)
    text = geno.to_json()
    assert len(text) > registry.GENOTYPE_TAG_LIMIT
    ref = _register(geno, "iac-cell-test-long", tmp_path, diagram=False)
    assert all(len(v) <= registry.GENOTYPE_TAG_LIMIT for v in ref.tags.values())
    assert ref.tags["genotype_chars"] == str(len(text))
    got, tags = registry.load_genotype_json(ref.uri)
    assert got == text and tags["method"] == "full"
    assert registry.load_cell(ref.uri) == geno


def test_an_unregistered_or_unknown_model_id_is_named_in_the_error(experiment):
    from iac import registry

    with pytest.raises(ValueError, match="m-0123456789abcdef0123456789abcdef"):
        registry.resolve("models:/m-0123456789abcdef0123456789abcdef")
    with pytest.raises(ValueError, match="names no version, alias or model id"):
        registry.resolve("models:/iac-cell-x")
