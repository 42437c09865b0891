"""Every search and analysis figure renders to a PNG, built with the Figure API (no pyplot state)."""

from __future__ import annotations

import json

import pytest
from matplotlib.figure import Figure
from trajectorykit import CFG, SPACE, Logits, live_trajectory, logged_trajectory

from iac.nas import analysis, plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SEARCH_FIGURES = {"op_weights", "edge_weights", "surviving_ops", "epoch_time"}


def assert_renders(figures: dict[str, Figure], folder) -> None:
    """Each figure is a pyplot-free Figure and draws to a non-empty PNG named after it."""
    for name, fig in figures.items():
        assert isinstance(fig, Figure) and fig.canvas.manager is None, name  # not registered with pyplot
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=50)
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > len(PNG_SIGNATURE), name


def test_search_figures_of_a_full_search_render(tmp_path):
    traj = json.loads(json.dumps(logged_trajectory(Logits(seed=0))))  # as read back from trajectory.json
    assert all(c["status"] is None for c in traj["checks"]) and not traj["events"]
    figs = plots.search_figures(traj)
    assert set(figs) == SEARCH_FIGURES  # a full search runs no stability test
    assert_renders(figs, tmp_path)


@pytest.mark.parametrize("tau", [CFG.tau, None])
def test_search_figures_of_an_lth_search_with_pruning_render(tmp_path, tau):
    traj = json.loads(json.dumps(logged_trajectory(Logits(seed=0), CFG)))
    kinds = {ev["kind"] for ev in traj["events"]}
    assert kinds == {"ops", "edges"}, "the synthetic search prunes operations and drops edges"
    assert any(not e["alive"] for e in traj["epochs"][-1]["archs"][0]["edges"])
    figs = plots.search_figures(traj, tau=tau)
    assert set(figs) == SEARCH_FIGURES | {"stability_js"}
    assert_renders(figs, tmp_path)
    js_axes = figs["stability_js"].axes[0]
    assert js_axes.get_yscale() == "log"
    tested = {key for c in traj["checks"] for key, st in c["status"].items() if st["js"]}
    assert {line.get_label() for line in js_axes.get_lines()} >= tested  # one curve per tested edge and node


def test_search_figures_before_the_first_epoch():
    assert plots.search_figures({"space": SPACE.to_dict(), "checks": [], "epochs": []}) == {}


def test_analysis_figures_render(tmp_path):
    traj, *_ = live_trajectory(Logits(seed=0), CFG)
    timeline = analysis.op_timeline(traj["events"], SPACE)
    figs = {
        "consecutive_js": plots.consecutive_js_figure(analysis.consecutive_js(traj), tau=CFG.tau),
        "op_timeline": plots.op_timeline_figure(timeline, traj["epochs"][-1]["epoch"]),
        "topk_membership": plots.topk_membership_figure(analysis.topk_membership(traj)),
    }
    assert all(len(f.axes) == 1 for f in figs.values())
    assert_renders(figs, tmp_path)
