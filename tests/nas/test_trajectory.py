"""The trajectory save/load pair and what every reader takes from it."""

from __future__ import annotations

import json

import pytest
from trajectorykit import CFG, HAND, HAND_SPACE, Logits, live_trajectory

from iac.nas import analysis
from iac.nas.genotype import CellGenotype, Genotype
from iac.nas.trajectory import epoch_checks, final_genotype, load_trajectory, save_trajectory, trajectory_space


def test_final_genotype_prefers_the_recorded_one():
    recorded = Genotype(HAND_SPACE, (CellGenotype(((("max_pool_3x3", 0), ("dil_conv_3x3", 1)),)),))
    traj = {**HAND, "final_genotype": recorded.to_dict()}
    assert final_genotype(traj) == recorded
    m = analysis.topk_membership(traj)
    assert m[m["epoch"] == 2].set_index("edge")["final_op"].to_dict() == {"0->2": "max_pool_3x3", "1->2": "dil_conv_3x3"}


def test_final_genotype_falls_back_to_the_last_epoch_then_the_last_check():
    from_check = final_genotype(HAND)
    assert str(from_check) == "n2<-sep_conv_3x3(0),skip_connect(1)"
    recorded = Genotype(HAND_SPACE, (CellGenotype(((("max_pool_3x3", 0), ("dil_conv_3x3", 1)),)),))
    epochs = [*HAND["epochs"][:-1], {**HAND["epochs"][-1], "genotype": recorded.to_dict()}]
    assert final_genotype({**HAND, "epochs": epochs}) == recorded
    with pytest.raises(ValueError, match="no final genotype"):
        final_genotype({**HAND, "checks": []})


def test_trajectory_space_and_epoch_checks():
    assert trajectory_space(HAND) == HAND_SPACE
    last = epoch_checks(HAND)
    assert list(last) == [0, 1, 2] and [rec["check"] for rec in last.values()] == [2, 3, 4]


def test_load_trajectory_validates(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_trajectory(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"space": {}}))
    with pytest.raises(ValueError, match="checks"):
        load_trajectory(bad)
    good = tmp_path / "t.json"
    good.write_text(json.dumps(HAND))
    assert load_trajectory(good)["checks"] == HAND["checks"]
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_trajectory(broken)


def test_save_then_load_round_trips(tmp_path):
    traj, _, geno, _ = live_trajectory(Logits(seed=0), CFG)
    path = save_trajectory(tmp_path / "run" / "trajectory.json", traj)
    assert path == tmp_path / "run" / "trajectory.json"
    back = load_trajectory(path)
    assert back == json.loads(json.dumps(traj))
    assert final_genotype(back) == geno
    assert json.loads(path.read_text()) == back  # plain JSON, readable without iac
    assert [p.name for p in path.parent.iterdir()] == ["trajectory.json"]  # no temporary file left


def test_save_replaces_atomically_and_keeps_the_old_file_on_error(tmp_path):
    path = tmp_path / "trajectory.json"
    save_trajectory(path, HAND)
    later = {**HAND, "epochs": [*HAND["epochs"], {"epoch": 3}]}
    save_trajectory(path, later)
    assert load_trajectory(path)["epochs"] == later["epochs"]
    with pytest.raises(TypeError):
        save_trajectory(path, {**HAND, "epochs": [{"epoch": object()}]})
    assert load_trajectory(path)["epochs"] == later["epochs"]
    assert [p.name for p in tmp_path.iterdir()] == ["trajectory.json"]
