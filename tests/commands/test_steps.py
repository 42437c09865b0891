"""The pipeline steps end to end on a tiny phantom, against a real SQLite store.

One module-scoped chain: retrain a baseline -> evaluate it -> search_full ->
retrain with the found cell -> evaluate on val (writes val_dice back to the
cell, champion alias) -> search_lth (prunes and stops) -> pyfunc predict on a
raw NIfTI -> registry look-up. Tiny budgets keep it to seconds per step.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from iac.config import BackboneConfig, EvalConfig, PrepareConfig, SearchConfig, StabilityConfig, TrainConfig

TINY_SEARCH = dict(epochs=3, warmup_epochs=1, max_slices_per_epoch=8, batch_size=4, cell_channels=4, nodes=2, check_every=1)


@pytest.fixture(scope="module")
def chain(tmp_path_factory, mlflow_store):
    """Run the chain once; tests read its outputs."""
    import mlflow

    from iac.commands.evaluate import run_evaluate
    from iac.commands.retrain import run_retrain
    from iac.commands.search import run_search_step
    from iac.data.prepare import prepare_dataset

    # System metrics sampled every 0.2 s, so even the shortest steps of this chain record some
    # (MLflow publishes nothing for a run that ends within its first sampling interval).
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    root = tmp_path_factory.mktemp("steps")
    exp = mlflow.create_experiment("steps-chain", artifact_location=(root / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=exp)
    prep = prepare_dataset(
        PrepareConfig(out=root / "prepared", phantom_patients=8, phantom_size=32, workers=1), progress=False
    )
    data = prep.root
    out: dict = {"data": data, "fingerprint": prep.fingerprint}
    base = TrainConfig(data=data, backbone=BackboneConfig(), epochs=1, batch_size=4, max_slices_per_epoch=8)
    out["baseline"] = run_retrain(base)
    out["eval_test"] = run_evaluate(
        EvalConfig(model=out["baseline"]["model_uri"], data=data, split="test", save_predictions=True)
    )
    scfg = SearchConfig(data=data, pretrained=out["baseline"]["model_uri"], **TINY_SEARCH)
    out["full"] = run_search_step(scfg, "full", None)
    icfg = TrainConfig(
        data=data, skip="iac", genotype=out["full"]["cell_uri"], epochs=1, batch_size=4, max_slices_per_epoch=8
    )
    out["iac"] = run_retrain(icfg)
    out["eval_val"] = run_evaluate(EvalConfig(model=out["iac"]["model_uri"], data=data, split="val"))
    lth = StabilityConfig(tau=0.5, patience=1, window=1)
    out["lth"] = run_search_step(scfg, "lth", lth, reference_run=out["full"]["run_id"])
    mp.undo()
    return out


def test_every_step_logs_its_dataset_with_its_context(chain):
    import mlflow

    expected = {"baseline": "training", "eval_test": "evaluation", "full": "search", "iac": "training",
                "lth": "search"}
    for key, context in expected.items():
        run = mlflow.get_run(chain[key]["run_id"])
        inputs = run.inputs.dataset_inputs
        assert [i.dataset.digest for i in inputs] == [chain["fingerprint"][:36]], key
        assert [t.value for i in inputs for t in i.tags if t.key == "mlflow.data.context"] == [context], key


def test_the_long_steps_record_system_metrics(chain):
    import mlflow

    for key in ("baseline", "full", "lth", "eval_test"):
        metrics = mlflow.get_run(chain[key]["run_id"]).data.metrics
        assert any(k.startswith("system/") for k in metrics), key


def test_retrain_registers_unet_with_tags(chain):
    from iac import registry

    ref = registry.resolve(chain["baseline"]["model_uri"])
    assert ref.name == "iac-unet-phantom-unet"
    for tag in ("skip", "seed", "val_dice", "data_fingerprint", "pretrained"):
        assert tag in ref.tags, tag
    assert ref.tags["skip"] == "identity"
    assert ref.tags["data_fingerprint"] == chain["fingerprint"]
    assert 0.0 <= float(ref.tags["val_dice"]) <= 1.0


def test_runs_record_whether_they_were_deterministic(chain):
    """The `deterministic` switch is a parameter and a tag; on CPU the runs always are."""
    import mlflow

    for step in ("baseline", "full", "lth"):
        run = mlflow.get_run(chain[step]["run_id"])
        assert run.data.tags["deterministic"] == "true", step
        assert "deterministic" in run.data.params, step


def test_evaluate_writes_per_case_and_copies_tags(chain):
    import mlflow

    from iac.eval.per_case import load_per_case

    run_id = chain["eval_test"]["run_id"]
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="per_case.csv")
    mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="per_case.json", dst_path=str(Path(local).parent))
    df, meta = load_per_case(local)
    assert {"patient", "frame", "label", "dice", "hd95", "nsd", "ref_empty", "pred_empty"} <= set(df.columns)
    assert set(df["frame"]) == {"ED", "ES"}
    assert meta["empty_policy"] == "dice1_hd0" and meta["restore"] == "probabilities"
    assert set(meta["nsd_tolerance_mm"]) == {"RV", "myocardium", "LV"}
    tags = mlflow.get_run(run_id).data.tags
    assert tags["skip"] == "identity" and tags["method"] == "identity"
    # The model's training data (registry tag) and the data evaluated here, kept apart.
    assert tags["data_fingerprint"] == chain["fingerprint"] == meta["data_fingerprint"]
    assert tags["eval_data_fingerprint"] == chain["fingerprint"] == meta["eval_data_fingerprint"]
    assert {"dice_patient_mean_fg", "nsd_patient_mean_fg"} <= set(mlflow.get_run(run_id).data.metrics)


def test_evaluate_writes_predictions_on_the_original_grid(chain):
    import mlflow
    import SimpleITK as sitk

    from iac.data.store import PreparedDataset

    data = PreparedDataset(chain["data"])
    local = Path(mlflow.artifacts.download_artifacts(run_id=chain["eval_test"]["run_id"], artifact_path="predictions"))
    files = sorted(local.glob("*.nii.gz"))
    assert len(files) == len(data.cases("test"))
    case = data.cases("test")[0]
    img = sitk.ReadImage(str(local / f"{case.case_id}.nii.gz"))
    ref, spacing = data.original_label(case.case_id)
    assert sitk.GetArrayFromImage(img).shape == ref.shape
    assert np.allclose(img.GetSpacing(), spacing)


def test_search_full_registers_genotype(chain):
    import mlflow

    from iac import registry
    from iac.nas.genotype import Genotype

    ref = registry.resolve(chain["full"]["cell_uri"])
    assert ref.name == "iac-cell-phantom-unet"
    for tag in ("method", "search_seconds", "epochs_run", "data_fingerprint", "pretrained", "seed", "genotype_json"):
        assert tag in ref.tags, tag
    assert ref.tags["method"] == "full"
    assert int(ref.tags["epochs_run"]) == TINY_SEARCH["epochs"]
    geno = Genotype.from_json(ref.tags["genotype_json"])
    # genotype.json is also an artifact of the search run itself.
    local = mlflow.artifacts.download_artifacts(run_id=chain["full"]["run_id"], artifact_path="genotype/genotype.json")
    assert Genotype.from_json(Path(local).read_text()) == geno
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(chain["full"]["run_id"], "plots")}
    assert "plots/op_weights.png" in arts and "plots/cell.png" in arts
    # The registered version is a loadable model: the genotype object, and its JSON from predict.
    model = mlflow.pyfunc.load_model(chain["full"]["cell_uri"])
    assert model.unwrap_python_model().genotype == geno
    assert Genotype.from_json(model.predict(None)) == geno


def test_retrain_with_cell_and_val_dice_written_back(chain):
    from iac import registry

    unet = registry.resolve(chain["iac"]["model_uri"])
    assert unet.tags["skip"] == "iac"
    assert unet.tags["genotype"] == registry.resolve(chain["full"]["cell_uri"]).uri
    # defaults to the cell's pretrained baseline
    assert unet.tags["pretrained"] == chain["baseline"]["model_uri"]
    cell = registry.resolve(chain["full"]["cell_uri"])
    assert abs(float(cell.tags["val_dice"]) - chain["eval_val"]["dice"]) < 1e-6
    champion = registry.resolve("models:/iac-cell-phantom-unet@champion")
    assert champion.tags.get("val_dice") is not None


def test_search_lth_prunes_stops_and_compares(chain):
    import mlflow

    from iac import registry

    ref = registry.resolve(chain["lth"]["cell_uri"])
    assert ref.tags["method"] == "lth"
    assert int(ref.tags["pruning_events"]) > 0
    metrics = mlflow.get_run(chain["lth"]["run_id"]).data.metrics
    assert "speedup_vs_full" in metrics and "genotype_agreement" in metrics
    log = json.loads(
        Path(mlflow.artifacts.download_artifacts(run_id=chain["lth"]["run_id"], artifact_path="pruning_log.json")).read_text()
    )
    assert log and all("removed" in ev for ev in log)


def test_pyfunc_predicts_raw_volume_on_its_grid(chain, tmp_path):
    import mlflow
    import SimpleITK as sitk

    from iac.serving import segment_file

    raw = sorted(Path(chain["data"]).rglob("patient*_frame??.nii.gz"))
    assert raw, "the phantom's raw NIfTI files are kept inside the prepared folder"
    model = mlflow.pyfunc.load_model(chain["baseline"]["model_uri"])
    img = sitk.ReadImage(str(raw[0]))
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    pred = model.predict(arr, params={"spacing": list(img.GetSpacing())})
    assert pred.shape == arr.shape
    assert set(np.unique(pred)) <= {0, 1, 2, 3}
    # The NIfTI helper: the same labels, written on the file's own grid.
    label = segment_file(model, raw[0], out=tmp_path / "seg.nii.gz")
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "seg.nii.gz"))), pred)
    assert label.GetOrigin() == img.GetOrigin()


def test_registry_best_cli(chain):
    from click.testing import CliRunner

    from iac.cli import main

    res = CliRunner().invoke(main, ["registry", "best", "--dataset", "phantom", "--backbone", "unet", "--json"])
    assert res.exit_code == 0, res.output
    best = json.loads(res.output)
    assert best["uri"].startswith("models:/iac-cell-phantom-unet/")
    res = CliRunner().invoke(main, ["registry", "list"])
    assert res.exit_code == 0 and "iac-unet-phantom-unet" in res.output
