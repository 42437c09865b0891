"""Where runs go and which model references every step accepts."""

from __future__ import annotations

import pytest
import torch

from iac.config import BackboneConfig, EvalConfig, MainConfig


@pytest.fixture
def no_launcher_env(monkeypatch):
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(key, raising=False)


def test_main_gets_its_own_experiment_only_instead_of_default(mlflow_store, no_launcher_env, monkeypatch):
    import mlflow

    from iac.commands.main import study_experiment

    mlflow.set_experiment(experiment_id="0")
    try:
        assert study_experiment(MainConfig()) == "iac-phantom-unet"
        assert study_experiment(MainConfig(backbone=BackboneConfig(preset="wide"))) == "iac-phantom-unet-wide"
        monkeypatch.setenv("MLFLOW_RUN_ID", "0123")  # under `mlflow run` the run exists already
        assert study_experiment(MainConfig()) is None
    finally:
        mlflow.set_experiment("test-main-experiment-choice")
    monkeypatch.delenv("MLFLOW_RUN_ID")
    assert study_experiment(MainConfig()) is None  # the user's choice stays


def test_a_step_inside_a_run_is_a_child_in_the_parents_experiment(mlflow_store, no_launcher_env):
    import mlflow

    from iac.commands.common import step_run

    parent_exp = mlflow.set_experiment("test-parent-experiment").experiment_id
    with mlflow.start_run() as parent:
        mlflow.set_experiment("test-elsewhere")  # the active experiment changes under the parent
        with step_run("evaluate", {"dataset": "x"}) as child:
            pass
    got = mlflow.get_run(child.info.run_id)
    assert got.info.experiment_id == parent_exp == parent.info.experiment_id
    assert got.data.tags["mlflow.parentRunId"] == parent.info.run_id


def test_every_model_uri_form_reaches_the_same_unet(experiment):
    import click
    import mlflow

    from iac import registry
    from iac.commands.common import model_ref
    from iac.data.preprocess import PreprocessParams
    from iac.models import create_backbone
    from iac.serving import CONFIG_FORMAT

    torch.manual_seed(0)
    net = create_backbone("unet", 1, 3, features=(4, 8)).eval()
    params = PreprocessParams(target_spacing=(1.5, 1.5), slice_size=16, modality="MR", channel_names=("MR",))
    config = {"format": CONFIG_FORMAT, "network": net.config, "preprocessing": params.to_dict()}
    with mlflow.start_run() as run:
        ref = registry.register_unet(run.info.run_id, net.state_dict(), config, "iac-unet-test-uris", {"skip": "identity"})
    mlflow.MlflowClient().set_registered_model_alias(ref.name, "champion", ref.version)
    assert ref.model_id and ref.model_id.startswith("m-")
    forms = [ref.uri, f"models:/{ref.name}@champion", f"models:/{ref.model_id}"]
    for uri in forms:
        assert model_ref("model", uri) == uri
        assert EvalConfig(model=uri).model == uri
        loaded, cfg, tags = registry.load_unet(uri)
        assert tags["skip"] == "identity" and cfg["network"] == net.config, uri
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))
        assert registry.resolve(uri).uri == ref.uri
    with pytest.raises(click.BadParameter, match="models:/<model_id>"):
        model_ref("model", "m-123")
