"""Trajectory analyses (top-k membership, rank correlation, consecutive JS, op timeline) and ``iac analyze``."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from trajectorykit import CFG, HAND, KEYS, OPS, SPACE, Logits, full_trajectory, live_trajectory

from iac.nas import analysis
from iac.nas.stability import js_divergence
from iac.nas.trajectory import final_genotype


def test_topk_membership_on_hand_made_trajectory():
    m = analysis.topk_membership(HAND)
    # Final genotype (from the last check, `none` ignored): sep_conv on 0->2, skip on 1->2.
    assert str(final_genotype(HAND)) == "n2<-sep_conv_3x3(0),skip_connect(1)"
    assert list(m["check"].unique()) == [2, 3, 4]  # the last check of each epoch
    ranks = m.pivot(index="epoch", columns="edge", values="rank")
    # Epoch 0: 0->2 uniform, ties by op order: sep_conv is third; 1->2: skip is last of the four real ops.
    assert ranks.loc[0].tolist() == [3.0, 4.0]
    assert ranks.loc[1].tolist() == [1.0, 1.0] and ranks.loc[2].tolist() == [1.0, 1.0]
    e0 = m[m["epoch"] == 0].set_index("edge")
    assert e0.loc["0->2", ["top1", "top2", "top3"]].tolist() == [False, False, True]
    assert e0.loc["1->2", ["top1", "top2", "top3"]].tolist() == [False, False, False]
    assert analysis.first_epoch_in_topk(m, 3) == 1
    assert analysis.first_epoch_in_topk(m, 1) == 1


def test_first_epoch_requires_staying_in_topk():
    def table(flags):
        return pd.DataFrame({"epoch": range(len(flags)), "top3": flags})

    assert analysis.first_epoch_in_topk(table([True, False, True, True]), 3) == 2
    assert analysis.first_epoch_in_topk(table([True, True, False]), 3) is None
    assert analysis.first_epoch_in_topk(table([True, True]), 3) == 0
    with pytest.raises(ValueError, match="top5"):
        analysis.first_epoch_in_topk(table([True]), 5)


def test_rank_correlation_and_consecutive_js():
    rho = analysis.rank_correlation(HAND).set_index(["epoch", "edge"])["spearman"]
    assert rho.loc[(2, "0->2")] == pytest.approx(1.0) and rho.loc[(2, "1->2")] == pytest.approx(1.0)
    assert math.isnan(rho.loc[(0, "0->2")])  # uniform: no ranking yet
    js = analysis.consecutive_js(HAND)
    assert len(js) == 3 * 2
    first = js[(js["check"] == 2) & (js["edge"] == "0->2")]["js"].item()
    assert first == js_divergence([0.2] * 5, HAND["checks"][0]["archs"][0]["edges"][0]["alpha"])


def test_consecutive_js_restricts_across_pruning():
    logits = Logits(seed=3)
    traj, *_ = live_trajectory(logits, CFG)
    js = analysis.consecutive_js(traj)
    assert js["js"].between(0, 1).all() and js["js"].notna().all()
    assert set(js["edge"]) == set(KEYS)


def test_op_timeline():
    logits = Logits(seed=0)
    traj, stop, geno, policy = live_trajectory(logits, CFG)
    tl = analysis.op_timeline(traj["events"], SPACE)
    assert len(tl) == len(KEYS) * len(OPS)
    left = tl[tl["removed_epoch"].isna()]
    survivors = {k: policy.surviving_ops(0, k) for k in KEYS}
    assert {(r.edge, r.op) for r in left.itertuples()} == {(k, ops[0]) for k, ops in survivors.items() if ops is not None}
    assert (tl[tl["by"] == "edges"]["edge"].isin([k for k, ops in survivors.items() if ops is None])).all()


# ---------------------------------------------------------------- the command


def test_analyze_command_on_a_file(tmp_path):
    from click.testing import CliRunner

    from iac.commands.analyze import analyze

    path = tmp_path / "trajectory.json"
    path.write_text(json.dumps(full_trajectory(Logits(seed=0), n_checks=40)))
    out = tmp_path / "out"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(full_trajectory(Logits(seed=1), n_checks=40)))
    result = CliRunner().invoke(analyze, [str(path), "--out", str(out), "--tau", "1e-3,1e-2", "--patience", "2", "--window", "1",
                                          "--other-full", str(other)])
    assert result.exit_code == 0, result.output
    assert "first epoch from which every final operation stays in the top-3" in result.output
    # Agreement as shared choices out of the total, next to chance and to another full search.
    assert "shared_choices" in result.output and "jaccard" in result.output
    assert "by chance" in result.output and "full search vs full search (1 pairs)" in result.output
    for name in ("topk_membership.csv", "rank_correlation.csv", "consecutive_js.csv", "replay_grid.csv", "op_timeline.csv",
                 "consecutive_js.png", "op_timeline.png", "topk_membership.png", "summary.json"):
        assert (out / name).is_file(), name
    assert len(pd.read_csv(out / "replay_grid.csv")) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 20 and "first_epoch_all_final_ops_in_top3" in summary
    assert {"random_jaccard_mean", "full_vs_full_jaccard_mean"} <= set(summary["agreement_yardsticks"])


def test_analyze_command_downloads_from_a_run(tmp_path, monkeypatch):
    import sys
    import types

    from click.testing import CliRunner

    from iac.commands.analyze import analyze

    run_id = "0123456789abcdef0123456789abcdef"
    stored = tmp_path / "artifacts"
    stored.mkdir()
    (stored / "trajectory.json").write_text(json.dumps(HAND))
    asked = []

    def fake_download(artifact_uri=None, dst_path=None, **kw):
        asked.append(artifact_uri)
        target = tmp_path / "dl" / "trajectory.json"
        target.parent.mkdir(exist_ok=True)
        target.write_text((stored / "trajectory.json").read_text())
        return str(target)

    # A stand-in for MLflow's artifact download (importing MLflow itself takes seconds).
    fake = types.SimpleNamespace(artifacts=types.SimpleNamespace(download_artifacts=fake_download))
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    result = CliRunner().invoke(analyze, [run_id, "--out", str(tmp_path / "o"), "--tau", "1e-3", "--patience", "1", "--window", "1"])
    assert result.exit_code == 0, result.output
    assert asked == [f"runs:/{run_id}/trajectory.json"]
    assert "epoch 1 (0-based) of 3" in result.output


def test_analyze_command_rejects_bad_source(tmp_path):
    from click.testing import CliRunner

    from iac.commands.analyze import analyze

    result = CliRunner().invoke(analyze, ["no-such-file.json", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "neither a trajectory file" in result.output
    result = CliRunner().invoke(analyze, [str(tmp_path), "--tau", "x"])
    assert result.exit_code != 0 and "--tau" in result.output
