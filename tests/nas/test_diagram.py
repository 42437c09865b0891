"""The cell diagram: every chosen edge an arrow labelled with its operation, nodes named, one panel per cell."""

from __future__ import annotations

import numpy as np
from matplotlib.patches import FancyArrowPatch

from iac.nas.diagram import INPUT_NAMES, OUTPUT_NAME, cell_figure, node_positions
from iac.nas.genotype import CellGenotype, Genotype, SearchSpace, random_genotype

CELL = CellGenotype(((("sep_conv_3x3", 0), ("skip_connect", 1)), (("dil_conv_5x5", 2), ("max_pool_3x3", 0))))
SPACE = SearchSpace(nodes=2)


def _labels(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_every_edge_is_drawn_with_its_operation_and_every_node_named():
    fig = cell_figure(Genotype(SPACE, (CELL,)), title="a cell")
    (ax,) = fig.axes
    labels = _labels(ax)
    for _, _, op in CELL.edges(SPACE.n_inputs):
        assert labels.count(op) == 1, op
    nodes = [child.get_text() for child in ax.get_children() if hasattr(child, "get_text") and child.get_text()]
    for name in (*INPUT_NAMES, "2", "3", OUTPUT_NAME):
        assert name in nodes, name
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    # 4 chosen edges plus 2 dashed arrows: each intermediate node into the concatenation.
    assert len(arrows) == 4 + SPACE.nodes
    assert sum(a.get_linestyle() == "--" for a in arrows) == SPACE.nodes
    assert fig._suptitle.get_text() == "a cell"


def test_a_per_level_genotype_gets_one_panel_per_skip_level():
    space = SearchSpace(nodes=3, per_level=True)
    geno = random_genotype(space, np.random.default_rng(0), n_levels=3)
    fig = cell_figure(geno)
    assert len(fig.axes) == 3
    for level, ax in enumerate(fig.axes):
        assert ax.get_title() == f"skip level {level}"
        ops = sorted(op for _, _, op in geno.cells[level].edges(space.n_inputs))
        assert sorted(t for t in _labels(ax) if t in space.ops) == ops


def test_a_one_input_cell_has_only_the_skip_input():
    space = SearchSpace(nodes=2, n_inputs=1)
    cell = CellGenotype(((("avg_pool_3x3", 0),), (("sep_conv_5x5", 1), ("skip_connect", 0))))
    (ax,) = cell_figure(Genotype(space, (cell,))).axes
    names = [c.get_text() for c in ax.get_children() if hasattr(c, "get_text")]
    assert "skip" in names and "up" not in names
    pos = node_positions(1, 2)
    assert pos[0][0] < pos[1][0] < pos[2][0] < pos[OUTPUT_NAME][0]


def test_the_figure_saves_as_png(tmp_path):
    fig = cell_figure(Genotype(SPACE, (CELL,)))
    fig.savefig(tmp_path / "cell.png")
    assert (tmp_path / "cell.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
