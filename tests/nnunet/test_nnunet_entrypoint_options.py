"""The entry points' nnU-Net options: usage errors before anything runs, and the registry's nnU-Net layout."""

from __future__ import annotations

import os

import pytest
import torch
from click.testing import CliRunner

from iac.cli import main
from nnunetkit import GENOTYPE


def _invoke(args: list[str], tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written
    result = CliRunner().invoke(main, args)
    assert "Traceback" not in result.output, result.output
    assert not any(tmp_path.iterdir()), f"{args} wrote {list(tmp_path.iterdir())}"
    return result


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["search_lth", "--data", "x", "--nnunet-dataset", "501"], 2, ["--nnunet-dataset", "only used with --backbone nnunet"]),
        (["search_full", "--data", "x", "--nnunet-fold", "1"], 2, ["--nnunet-fold", "only used with --backbone nnunet"]),
        (["retrain", "--data", "x", "--nnunet-plans", "nnUNetPlans"], 2, ["--nnunet-plans"]),
        (["search_lth", "--data", "x", "--backbone", "nnunet"], 2, ["--nnunet-dataset", "dataset id"]),
        (["search_lth", "--data", "x", "--backbone", "nnunet", "--nnunet-dataset", "501", "--nnunet-fold", "one"], 2,
         ["--nnunet-fold", "integer"]),
        (["retrain", "--data", "x", "--backbone", "nnunet", "--nnunet-dataset", "501"], 2, ["--skip", "skip=iac"]),
        (["retrain", "--data", "x", "--backbone", "nnunet", "--nnunet-dataset", "501", "--skip", "iac"], 2,
         ["--genotype"]),
        (["search_lth", "--data", "x", "--backbone", "nnunet", "--nnunet-dataset", "501", "--resume", "abc"], 2,
         ["--resume", "not available with --backbone nnunet"]),
        (["search_lth", "--data", "x", "--backbone", "nnunet", "--nnunet-dataset", "501"], 1,
         ["nnUNet_raw is not set"]),
    ],
)
def test_nnunet_options_fail_in_one_line(args, code, words, tmp_path, monkeypatch, mlflow_store):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(var, raising=False)
    result = _invoke(args, tmp_path, monkeypatch)
    assert result.exit_code == code, result.output
    for w in words:
        assert w in result.output, result.output


def test_register_nnunet_stores_safetensors_and_json(tmp_path, experiment):
    import mlflow

    from iac import registry

    state = {"encoder.w": torch.randn(3, 2), "decoder.skip_modules.0.cell.b": torch.zeros(4)}
    config = {"format": "iac-nnunet-model/1", "configuration": "2d_iac", "plans": {"plans_name": "p"}}
    with mlflow.start_run() as run:
        ref = registry.register_nnunet(run.info.run_id, state, config, "iac-unet-unit-nnunet",
                                       {"skip": "iac", "nnunet_plans": "nnUNetPlans", "backbone": "nnunet"})
    assert ref.uri == "models:/iac-unet-unit-nnunet/1" and ref.tags["nnunet_plans"] == "nnUNetPlans"
    local = mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=str(tmp_path / "m"))
    assert sorted(os.listdir(local)) == ["model.safetensors", "nnunet_model.json"]
    loaded, cfg, tags = registry.load_nnunet_files(ref.uri)
    assert cfg == config and tags["backbone"] == "nnunet"
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    listing = CliRunner().invoke(main, ["registry", "list"]).output
    assert "iac-unet-unit-nnunet" in listing
    cell = registry.register_genotype(run.info.run_id, GENOTYPE.to_json(), "iac-cell-unit-nnunet", {"method": "lth"})
    with pytest.raises(ValueError, match="not an nnU-Net network"):
        registry.load_nnunet_files(cell.uri)


def test_untie_stores_each_shared_tensor_once(tmp_path):
    """nnU-Net's state dict names tensors several times; safetensors takes the untied dict, and it loads back."""
    from safetensors.torch import load_file, save_file

    from iac.nnunet.network import IACPlainConvUNet
    from iac.nnunet.steps import untie
    from nnunetkit import PLAIN_KWARGS, trained_like

    net = trained_like(IACPlainConvUNet(**PLAIN_KWARGS, genotype=GENOTYPE.to_json()))
    state = net.state_dict()
    unique, tied = untie(state)
    assert tied and any(a.startswith("decoder.encoder.") for a in tied)
    assert set(unique) | set(tied) == set(state) and not set(unique) & set(tied)
    save_file(unique, str(tmp_path / "w.safetensors"))  # refuses tensors that share memory
    loaded = load_file(str(tmp_path / "w.safetensors"))
    loaded.update({alias: loaded[kept] for alias, kept in tied.items()})
    fresh = IACPlainConvUNet(**PLAIN_KWARGS, genotype=GENOTYPE.to_json())
    fresh.load_state_dict(loaded, strict=True)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())
