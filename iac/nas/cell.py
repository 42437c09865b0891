"""Cells implanted in a skip connection: the searchable one and the discrete one.

Both take the skip feature (input node 0) and, with two inputs, the decoder's
upsampled feature at the same scale (input node 1), project each to the cell
width ``C`` with a 1x1 conv and a non-affine norm, compute the intermediate
nodes from all earlier nodes, and project the concatenation of the
intermediate nodes back to the skip's channel count (1x1 conv and norm).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from iac.nas.genotype import CellGenotype, SearchSpace, edge_key
from iac.nas.mixed_op import MixedOp, channel_shuffle, conv_norm, source_node_outputs
from iac.nas.operations import OPS, conv_class, norm_class

__all__ = ["SearchCell", "DiscreteCell", "Projection"]


class Projection(nn.Sequential):
    """1x1 conv (no bias) followed by a non-affine norm: ``(B, c_in, *S) -> (B, c_out, *S)``."""

    def __init__(self, c_in: int, c_out: int, spatial_dims: int):
        super().__init__(
            conv_class(spatial_dims)(c_in, c_out, 1, bias=False),
            norm_class(spatial_dims)(c_out, affine=False),
        )


def _input_projections(n_inputs: int, skip_ch: int, up_ch: int | None, C: int, spatial_dims: int) -> nn.ModuleList:
    if n_inputs == 2 and not up_ch:
        raise ValueError("a two-input cell (cell_inputs='skip+up') needs up_ch, the decoder feature's channels")
    widths = [skip_ch, up_ch][:n_inputs]
    return nn.ModuleList(Projection(w, C, spatial_dims) for w in widths)


def _project(proj: Projection, x: torch.Tensor) -> torch.Tensor:
    """``proj(x)`` with the 1x1 conv and the norm in one call that keeps only ``x`` for the backward pass.

    Same result up to float rounding (:func:`iac.nas.mixed_op.conv_norm`).
    """
    return conv_norm(x, None, [proj[0]], [proj[1]])


def _inputs(
    projections: nn.ModuleList, skip: torch.Tensor, up: torch.Tensor | None, fused: bool = False
) -> list[torch.Tensor]:
    if len(projections) == 2 and up is None:
        raise ValueError("this cell has two inputs and needs the decoder feature `up`")
    if up is not None and up.shape[2:] != skip.shape[2:]:
        raise ValueError(f"decoder feature {tuple(up.shape)} and skip {tuple(skip.shape)} differ in spatial size")
    if fused:
        return [_project(proj, x) for proj, x in zip(projections, (skip, up))]  # each (B, C, *S)
    return [proj(x) for proj, x in zip(projections, (skip, up))]  # each (B, C, *S)


class SearchCell(nn.Module):
    """The supernet cell: every edge is a :class:`MixedOp`.

    The cell owns no architecture weights: one architecture may be shared by
    the cells of several skip levels, so :meth:`forward` receives them.

    Args:
        space: the search space (ops, nodes, n_inputs, k, cell_channels).
        skip_ch: channels of the skip feature (and of the output).
        up_ch: channels of the decoder feature (unused with one input).
        spatial_dims: 2 for slices, 3 for volumes.
    """

    def __init__(self, space: SearchSpace, skip_ch: int, up_ch: int | None, spatial_dims: int = 2):
        super().__init__()
        self.space = space
        C = space.cell_channels
        self.inputs = _input_projections(space.n_inputs, skip_ch, up_ch, C, spatial_dims)
        # Edge "i->j" -> mixed op; pruned edges are deleted from the dict.
        self.edges = nn.ModuleDict(
            {edge_key(i, j): MixedOp(C, space.ops, space.k, spatial_dims) for i, j in space.edges()}
        )
        self.output = Projection(space.nodes * C, skip_ch, spatial_dims)

    def forward(
        self,
        skip: torch.Tensor,
        up: torch.Tensor | None,
        op_weights: Sequence[torch.Tensor | None],
        edge_weights: Sequence[torch.Tensor | None],
    ) -> torch.Tensor:
        """Run the cell.

        Args:
            skip: (B, skip_ch, *S) encoder feature.
            up: (B, up_ch, *S) decoder feature, or None for a one-input cell.
            op_weights: per edge of ``space.edges()``, softmax(alpha) over the
                edge's surviving operations; None for a dead edge.
            edge_weights: per edge, its scalar softmax(beta) weight within its
                node; None for a dead edge.

        Returns:
            (B, skip_ch, *S).
        """
        states = _inputs(self.inputs, skip, up, fused=True)
        edges = self.space.edges()
        if len(op_weights) != len(edges) or len(edge_weights) != len(edges):
            raise ValueError(
                f"got {len(op_weights)} op weights and {len(edge_weights)} edge weights for {len(edges)} edges"
            )
        # Source by source: every edge leaving node i is evaluated together
        # (source_node_outputs), and node j is assembled once from its
        # incoming edges: mixed slices and bypass channels are summed first,
        # then concatenated and shuffled once. Because the shuffle and the
        # concatenation are linear, this equals summing the edges' shuffled
        # outputs (MixedOp.forward) up to float rounding.
        key_index = {(i, j): e for e, (i, j) in enumerate(edges)}
        mixed_sum: dict[int, torch.Tensor] = {}
        bypass_sum: dict[int, torch.Tensor] = {}
        n_states = self.space.n_inputs + self.space.nodes
        for i in range(n_states - 1):
            if i >= self.space.n_inputs:  # all of node i's incoming edges are in
                states.append(self._assemble(i, mixed_sum, bypass_sum))
            outgoing = []
            for j in range(max(i + 1, self.space.n_inputs), n_states):
                key = edge_key(i, j)
                if key in self.edges:
                    e = key_index[(i, j)]
                    outgoing.append((j, self.edges[key], op_weights[e], edge_weights[e]))
            if not outgoing:
                continue
            x = states[i]
            mixed = source_node_outputs(x, [(m, w, b) for _, m, w, b in outgoing])  # (B, n, c, *S)
            c = mixed.shape[2]
            for pos, (j, m, _, b) in enumerate(outgoing):
                y = mixed[:, pos]
                mixed_sum[j] = y if j not in mixed_sum else mixed_sum[j] + y
                if m.k > 1:
                    z = b * x[:, c:]
                    bypass_sum[j] = z if j not in bypass_sum else bypass_sum[j] + z
        states.append(self._assemble(n_states - 1, mixed_sum, bypass_sum))
        return _project(self.output, torch.cat(states[self.space.n_inputs :], dim=1))

    def _assemble(self, j: int, mixed_sum: dict, bypass_sum: dict) -> torch.Tensor:
        if j not in mixed_sum:
            raise RuntimeError(f"node {j} has no alive incoming edge")
        k = self.space.k
        if k == 1:
            return mixed_sum.pop(j)
        return channel_shuffle(torch.cat([mixed_sum.pop(j), bypass_sum.pop(j)], dim=1), k)  # (B, C, *S)


class DiscreteCell(nn.Module):
    """A found cell: only the chosen operations, on all ``C`` channels, no weights to search.

    Args:
        genotype_cell: the chosen edges and operations.
        skip_ch: channels of the skip feature (and of the output).
        up_ch: channels of the decoder feature (unused with one input).
        cell_channels: cell width C.
        spatial_dims: 2 for slices, 3 for volumes.
        n_inputs: input nodes (the genotype's ``space.n_inputs``).
    """

    def __init__(
        self,
        genotype_cell: CellGenotype,
        skip_ch: int,
        up_ch: int | None,
        cell_channels: int,
        spatial_dims: int = 2,
        n_inputs: int = 2,
    ):
        super().__init__()
        self.n_inputs = n_inputs
        self.n_nodes = len(genotype_cell.nodes)
        self.chosen = genotype_cell.edges(n_inputs)  # [(src, dst, op)]
        for src, dst, op in self.chosen:
            if op not in OPS or op == "none" or not 0 <= src < dst:
                raise ValueError(f"edge {edge_key(src, dst)} with op {op!r} does not fit a discrete cell")
        self.inputs = _input_projections(n_inputs, skip_ch, up_ch, cell_channels, spatial_dims)
        self.ops = nn.ModuleDict(
            {edge_key(src, dst): OPS[op](cell_channels, spatial_dims) for src, dst, op in self.chosen}
        )
        self.output = Projection(self.n_nodes * cell_channels, skip_ch, spatial_dims)

    def forward(self, skip: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
        """(B, skip_ch, *S), (B, up_ch, *S) -> (B, skip_ch, *S)."""
        states = _inputs(self.inputs, skip, up)
        for m in range(self.n_nodes):
            j = self.n_inputs + m
            node = None
            for src, dst, _ in self.chosen:
                if dst == j:
                    y = self.ops[edge_key(src, dst)](states[src])
                    node = y if node is None else node + y
            states.append(node)
        return self.output(torch.cat(states[self.n_inputs :], dim=1))
