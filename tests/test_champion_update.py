"""The val_dice write-back and the champion move: one idempotent update, right under concurrency."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from iac.nas.genotype import SearchSpace, random_genotype

FP = "f" * 64


def _cells(name: str, n: int) -> list[str]:
    import mlflow

    from iac import registry

    uris = []
    for seed in range(n):
        geno = random_genotype(SearchSpace(nodes=2), np.random.default_rng(seed))
        with mlflow.start_run() as run:
            ref = registry.register_genotype(run.info.run_id, geno.to_json(), name, {"method": "full", "data_fingerprint": FP})
        uris.append(ref.uri)
    return uris


def test_two_concurrent_evaluations_leave_the_champion_on_the_better_cell(experiment, monkeypatch):
    """Evaluation A reads the registry before B writes its (better) score, and moves the alias after B finished.

    A single read-then-move would leave the champion on A's worse cell; the
    update re-reads after its move and corrects it.
    """
    import mlflow

    from iac import registry

    name = "iac-cell-test-concurrent"
    worse, better = _cells(name, 2)
    a_read, b_done = threading.Event(), threading.Event()
    original = mlflow.MlflowClient.set_registered_model_alias

    def alias_move(self, model, alias, version):
        if threading.current_thread().name == "eval-a" and not b_done.is_set():
            a_read.set()  # A has read the registry (B's score not there yet) and is about to move the alias
            assert b_done.wait(120), "evaluation B did not finish"
        return original(self, model, alias, version)

    monkeypatch.setattr(mlflow.MlflowClient, "set_registered_model_alias", alias_move)
    errors = []

    def run(cell, dice, before=None, after=None):
        try:
            if before is not None:
                assert before.wait(120), "evaluation A did not reach its alias move"
            registry.record_validation(cell, dice, f"models:/iac-unet-x/{dice}", FP)
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)
        finally:
            if after is not None:
                after.set()

    a = threading.Thread(target=run, args=(worse, 0.50), name="eval-a")
    b = threading.Thread(target=run, args=(better, 0.90, a_read, b_done), name="eval-b")
    a.start()
    b.start()
    a.join(240)
    b.join(240)
    assert not errors, errors
    champion = registry.resolve(f"models:/{name}@champion")
    assert champion.uri == better and champion.tags["val_dice"] == "0.900000"
    assert registry.resolve(f"models:/{name}@champion-{FP[:8]}").uri == better
    assert registry.resolve(worse).tags["val_dice"] == "0.500000"


def test_recording_the_same_score_again_changes_nothing(experiment, monkeypatch):
    import mlflow

    from iac import registry

    name = "iac-cell-test-idempotent"
    (cell,) = _cells(name, 1)
    first = registry.record_validation(cell, 0.7, "models:/iac-unet-x/1", FP)
    assert first is not None and first.uri == cell
    writes = []
    for method in ("set_registered_model_alias", "set_model_version_tag"):
        original = getattr(mlflow.MlflowClient, method)
        monkeypatch.setattr(mlflow.MlflowClient, method,
                            lambda self, *a, _o=original, _m=method, **k: (writes.append(_m), _o(self, *a, **k))[1])
    again = registry.record_validation(cell, 0.7, "models:/iac-unet-x/1", FP)
    assert again == registry.resolve(cell) and writes == []


def test_a_moving_champion_that_never_settles_is_an_error(experiment, monkeypatch):
    import mlflow

    from iac import registry

    name = "iac-cell-test-unsettled"
    (cell,) = _cells(name, 1)
    registry.set_version_tags(name, "1", {"val_dice": "0.5"})
    monkeypatch.setattr(mlflow.MlflowClient, "set_registered_model_alias", lambda self, *a, **k: None)
    with pytest.raises(RuntimeError, match="kept moving"):
        registry.update_champion(name, FP, max_rounds=3)
