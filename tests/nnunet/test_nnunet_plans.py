"""The 2d_iac configuration, the epoch mapping, and one clear error per bad input."""

from __future__ import annotations

import json

import pytest
import torch

from iac.config import SearchConfig
from iac.nas.genotype import GenotypeError
from iac.nnunet.budget import nnunet_epochs
from iac.nnunet.plans import IACPlanSettings, PlansError, add_iac_configuration, iac_block, write_iac_plans
from iac.nnunet.run import NNUNetInputError, dataset_name, nnunet_paths, train
from nnunetkit import GENOTYPE

ARCH_2D = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {
        "n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": "torch.nn.modules.conv.Conv2d",
        "kernel_sizes": [[3, 3]] * 3, "strides": [[1, 1], [2, 2], [2, 2]], "n_conv_per_stage": [2, 2, 2],
        "n_conv_per_stage_decoder": [2, 2], "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}


def _plans() -> dict:
    """The parts of an nnU-Net plans file the configuration reads (as nnUNetv2_plan_and_preprocess writes them)."""
    arch_3d = json.loads(json.dumps(ARCH_2D).replace("Conv2d", "Conv3d").replace("InstanceNorm2d", "InstanceNorm3d"))
    return {
        "dataset_name": "Dataset042_phantom", "plans_name": "nnUNetPlans", "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2], "original_median_spacing_after_transp": [8.0, 1.5, 1.5],
        "original_median_shape_after_transp": [12, 32, 32], "image_reader_writer": "SimpleITKIO",
        "label_manager": "LabelManager", "foreground_intensity_properties_per_channel": {},
        "configurations": {
            "2d": {"data_identifier": "nnUNetPlans_2d", "preprocessor_name": "DefaultPreprocessor",
                   "batch_size": 4, "patch_size": [32, 32], "spacing": [1.5, 1.5], "architecture": ARCH_2D},
            "3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres", "batch_size": 2, "patch_size": [8, 32, 32],
                           "spacing": [8.0, 1.5, 1.5], "architecture": arch_3d},
        },
    }


def test_the_configuration_carries_the_whole_architecture_and_builds_through_nnunet():
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = add_iac_configuration(_plans(), genotype=GENOTYPE)
    conf = plans["configurations"]["2d_iac"]
    assert conf["inherits_from"] == "2d" and set(conf) == {"inherits_from", "architecture", "iac"}
    assert conf["architecture"]["network_class_name"] == "iac.nnunet.network.IACPlainConvUNet"
    assert conf["architecture"]["_kw_requires_import"] == ARCH_2D["_kw_requires_import"]
    cm = PlansManager(plans).get_configuration("2d_iac")  # nnU-Net's own resolution of inherits_from
    assert cm.data_identifier == "nnUNetPlans_2d" and cm.batch_size == 4  # the 2-D data and settings are reused
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                 cm.network_arch_init_kwargs_req_import, 1, 3, allow_init=True, deep_supervision=True)
    assert [type(s).__name__ for s in net.decoder.skip_modules] == ["IACSkip", "IACSkip"]
    assert net.genotype == GENOTYPE
    assert all(torch.count_nonzero(s.proj.weight) == 0 for s in net.decoder.skip_modules)


def test_settings_round_trip_through_the_plans_file(tmp_path):
    settings = IACPlanSettings(method="full", search=SearchConfig(epochs=7, nodes=2, ops=("none", "skip_connect")),
                               iterations_per_epoch=9, max_nnunet_epochs=3)
    (tmp_path / "nnUNetPlans.json").write_text(json.dumps(_plans()))
    out = write_iac_plans(tmp_path / "nnUNetPlans.json", tmp_path / "nnUNetPlans_iac.json", settings)
    written = json.loads(out.read_text())
    assert written["plans_name"] == "nnUNetPlans_iac"
    assert written["configurations"]["2d_iac"]["architecture"]["arch_kwargs"]["genotype"] is None
    assert iac_block(written, "2d_iac") == settings


@pytest.mark.parametrize("base, match", [("3d_fullres", "is not 2-D"), ("2d_lowres", "no configuration")])
def test_a_configuration_that_is_not_2d_is_refused(base, match):
    with pytest.raises(PlansError, match=match):
        add_iac_configuration(_plans(), base=base)


def test_a_genotype_of_another_search_space_is_refused():
    bad = GENOTYPE.to_dict()
    bad["cells"] = [{"nodes": [[["conv_9x9", 0], ["skip_connect", 1]]]}]
    with pytest.raises(GenotypeError):
        add_iac_configuration(_plans(), genotype=json.dumps(bad))
    with pytest.raises(PlansError, match="no 'iac' settings"):
        iac_block(_plans(), "2d")


def test_the_paper_budget_maps_onto_nnunet_epochs():
    # 200 passes over 950 slices at batch 40: 200 x 24 = 4800 weight steps = 19.2 -> 20 epochs of 250
    assert nnunet_epochs(200, 950, 40, 250) == 20
    assert nnunet_epochs(15, 950, 40, 250, minimum=0) == 2
    assert nnunet_epochs(0, 950, 40, 250, minimum=0) == 0
    assert nnunet_epochs(200, 950, 40, 250, cap=3) == 3
    with pytest.raises(ValueError):
        nnunet_epochs(200, 0, 40, 250)


@pytest.fixture
def nnunet_env(tmp_path, monkeypatch):
    for name in ("raw", "preprocessed", "results"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(f"nnUNet_{name}", str(tmp_path / name))
    folder = tmp_path / "preprocessed" / "Dataset042_phantom"
    folder.mkdir()
    (folder / "nnUNetPlans.json").write_text(json.dumps(add_iac_configuration(_plans())))
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MR"}, "labels": {"background": 0, "a": 1},
                                                     "numTraining": 2, "file_ending": ".nii.gz"}))
    return tmp_path


@pytest.mark.parametrize("var", ["nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"])
def test_missing_nnunet_folders_are_one_line(nnunet_env, monkeypatch, var):
    monkeypatch.delenv(var)
    with pytest.raises(NNUNetInputError, match=f"^{var} is not set") as err:
        nnunet_paths()
    assert "\n" not in str(err.value)


def test_bad_training_inputs_fail_before_anything_is_written(nnunet_env):
    paths = nnunet_paths()
    assert dataset_name("42", paths) == "Dataset042_phantom"
    with pytest.raises(NNUNetInputError, match="dataset 43 does not exist"):
        train(43, "2d", 0)
    with pytest.raises(NNUNetInputError, match="not 2-D"):
        train(42, "3d_fullres", 0)
    with pytest.raises(NNUNetInputError, match="fold 1 has no trained baseline"):
        train(42, "2d_iac", 1, trainer="nnUNetTrainerIACSearch")
    with pytest.raises(NNUNetInputError, match="no plans 'nnUNetPlans_x'"):
        train(42, "2d", 0, plans="nnUNetPlans_x")
    assert not any((nnunet_env / "results").iterdir())


@pytest.mark.parametrize("name", ["nnUNetTrainerIACSearch", "nnUNetTrainerIACRetrain"])
def test_the_trainers_are_found_where_nnunet_exttrainer_points(name):
    """The external-folder half of nnU-Net's ``-tr`` lookup, on ``iac/nnunet/ext``."""
    import os

    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    import iac.nnunet.ext
    from iac.nnunet import trainers

    folder = os.path.dirname(iac.nnunet.ext.__file__)
    found = recursive_find_python_class(folder, name, None, base_folder=folder, cleanup_imports_from_base_folder=True)
    assert found is getattr(trainers, name)
