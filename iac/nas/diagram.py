"""A picture of a found cell: its nodes, its chosen edges and their operations.

The familiar DARTS ``visualize`` picture, drawn with matplotlib (no graphviz
binary needed): the input nodes on the left (``skip`` = the encoder's skip
feature, ``up`` = the decoder's upsampled feature), the intermediate nodes in
order, each chosen edge an arrow labelled with its operation, and the
concatenation of the intermediate nodes into ``out`` (the projection back to
the skip's channels) on the right.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402

from iac.nas.genotype import CellGenotype, Genotype  # noqa: E402

__all__ = ["INPUT_NAMES", "OUTPUT_NAME", "cell_figure", "node_positions"]

# Names of the input nodes, by index.
INPUT_NAMES = ("skip", "up")
OUTPUT_NAME = "out"
# Colours per operation (tab10 order; operations outside the DARTS list cycle through it).
_OP_COLOURS = {
    "skip_connect": "tab:gray", "max_pool_3x3": "tab:blue", "avg_pool_3x3": "tab:cyan",
    "sep_conv_3x3": "tab:orange", "sep_conv_5x5": "tab:red", "dil_conv_3x3": "tab:green",
    "dil_conv_5x5": "tab:olive",
}
# Bend of every edge (matplotlib's arc3 ``rad``): curved edges do not hide each other's labels.
_BEND = 0.25


def node_positions(n_inputs: int, n_nodes: int) -> dict[int | str, tuple[float, float]]:
    """(x, y) of each node: inputs stacked on the left, intermediate nodes zig-zag, ``out`` on the right."""
    pos: dict[int | str, tuple[float, float]] = {}
    for i in range(n_inputs):
        pos[i] = (0.0, 1.0 - 2.0 * i if n_inputs > 1 else 0.0)
    for m in range(n_nodes):
        pos[n_inputs + m] = (1.4 * (m + 1), 0.6 if m % 2 == 0 else -0.6)
    pos[OUTPUT_NAME] = (1.4 * (n_nodes + 1), 0.0)
    return pos


def _node_name(node: int, n_inputs: int) -> str:
    return INPUT_NAMES[node] if node < n_inputs else str(node)


def _draw_cell(ax, cell: CellGenotype, n_inputs: int, title: str) -> None:
    """One cell on ``ax``: node circles, labelled operation arrows, dashed concatenation arrows."""
    n_nodes = len(cell.nodes)
    pos = node_positions(n_inputs, n_nodes)
    for node, (x, y) in pos.items():
        is_input = isinstance(node, int) and node < n_inputs
        face = "lightsteelblue" if is_input else "lightyellow" if node == OUTPUT_NAME else "white"
        name = OUTPUT_NAME if node == OUTPUT_NAME else _node_name(node, n_inputs)
        ax.annotate(name, (x, y), ha="center", va="center", fontsize=9, zorder=3,
                    bbox={"boxstyle": "circle,pad=0.35", "fc": face, "ec": "black"})
    middles = []
    for src, dst, op in cell.edges(n_inputs):
        middles.append(_arrow(ax, pos[src], pos[dst], _OP_COLOURS.get(op, "tab:purple"), op))
    for m in range(n_nodes):
        middles.append(_arrow(ax, pos[n_inputs + m], pos[OUTPUT_NAME], "black", None, dashed=True))
    xs = [p[0] for p in [*pos.values(), *middles]]
    ys = [p[1] for p in [*pos.values(), *middles]]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(min(ys) - 0.4, max(ys) + 0.4)
    ax.set_title(title, fontsize=10)
    ax.axis("off")


def _arrow(ax, start, end, colour: str, label: str | None, dashed: bool = False) -> tuple[float, float]:
    """A curved arrow from ``start`` to ``end``, its label at the curve's middle; returns that middle."""
    ax.add_patch(FancyArrowPatch(
        start, end, connectionstyle=f"arc3,rad={_BEND}", arrowstyle="-|>", mutation_scale=12,
        color=colour, lw=1.4, ls="--" if dashed else "-", shrinkA=12, shrinkB=12, zorder=2,
    ))
    # The arc3 curve's middle lies at half the bend off the chord, to the chord's right-hand normal.
    (x0, y0), (x1, y1) = start, end
    dx, dy = x1 - x0, y1 - y0
    mx, my = (x0 + x1) / 2 + _BEND / 2 * dy, (y0 + y1) / 2 - _BEND / 2 * dx
    if label is None:
        return mx, my
    ax.text(mx, my, label, fontsize=7, color=colour, ha="center", va="center", zorder=4,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    return mx, my


def cell_figure(genotype: Genotype, title: str | None = None) -> Figure:
    """The cell diagram of ``genotype``: one panel per cell (one for a shared cell, one per skip level).

    Args:
        genotype: the found cell(s).
        title: the figure's title (default: none).

    Returns:
        A matplotlib figure (not attached to pyplot; save it with ``savefig``).
    """
    n_inputs = genotype.space.n_inputs
    cells = genotype.cells
    width = 1.3 * (genotype.space.nodes + 2) + 1.0
    fig = Figure(figsize=(width, 3.6 * len(cells)))
    axes = fig.subplots(len(cells), 1, squeeze=False)[:, 0]
    for level, (ax, cell) in enumerate(zip(axes, cells)):
        panel = "shared cell (every skip level)" if not genotype.space.per_level else f"skip level {level}"
        _draw_cell(ax, cell, n_inputs, panel)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
