"""The search network: a trained U-Net with a searchable cell in every skip.

Architecture weights are registered ``nn.Parameter``s, separate from the
network weights: per architecture, one ``alpha`` per edge (over the edge's
surviving operations) and one ``beta`` per intermediate node (over its alive
incoming edges), in ``nn.ParameterList``s. One architecture is shared by all
skip levels (each level keeps its own cell weights), or, with
``space.per_level``, each level has its own.

Pruning is a mask: :meth:`SearchNetwork.prune_ops` and
:meth:`SearchNetwork.prune_edges` drop modules and replace the affected
parameter by a smaller one at the same position, returning what the caller
needs to move optimizer state. :meth:`SearchNetwork.masks` is JSON; applying
it to a fresh network rebuilds the pruned shapes before ``load_state_dict``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from iac.nas.cell import SearchCell
from iac.nas.genotype import EdgeState, Genotype, SearchSpace, discretize, edge_key
from iac.nas.implant import IACSkip, implant

__all__ = ["SearchNetwork", "ArchWeights", "ARCH_INIT_SCALE"]

# Architecture weights start as ARCH_INIT_SCALE * N(0, 1) (DARTS), i.e. near-uniform.
ARCH_INIT_SCALE = 1e-3


class ArchWeights(nn.Module):
    """One architecture: alphas per edge, betas per node, and the surviving-op mask.

    Attributes:
        alpha: ParameterList, one (len(ops[e]),) parameter per edge of ``space.edges()``.
        beta: ParameterList, one (alive in-degree,) parameter per intermediate node.
        ops: per edge, the surviving operation names.
        alive: per edge, False once pruned away.
        mass: per edge, the probability mass its surviving operations held
            when it was last pruned (product over prunings; see
            :class:`iac.nas.genotype.EdgeState`).
    """

    def __init__(self, space: SearchSpace):
        super().__init__()
        self.space = space
        edges = space.edges()
        self.ops: list[tuple[str, ...]] = [tuple(space.ops) for _ in edges]
        self.alive: list[bool] = [True for _ in edges]
        self.mass: list[float] = [1.0 for _ in edges]
        self.alpha = nn.ParameterList(
            nn.Parameter(ARCH_INIT_SCALE * torch.randn(len(space.ops))) for _ in edges
        )
        self.beta = nn.ParameterList(
            nn.Parameter(ARCH_INIT_SCALE * torch.randn(len(space.node_edges(j)))) for j in space.node_ids
        )

    def alive_edges(self, node: int) -> list[int]:
        """Indices of the alive edges entering ``node`` (order of ``beta``)."""
        return [e for e in self.space.node_edges(node) if self.alive[e]]

    def weights(self) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None]]:
        """Per edge: softmax(alpha) and the scalar softmax(beta) weight; None when dead."""
        op_w: list[torch.Tensor | None] = [None] * len(self.ops)
        edge_w: list[torch.Tensor | None] = [None] * len(self.ops)
        for m, j in enumerate(self.space.node_ids):
            alive = self.alive_edges(j)
            b = torch.softmax(self.beta[m], dim=0)  # (alive in-degree,)
            for pos, e in enumerate(alive):
                op_w[e] = torch.softmax(self.alpha[e], dim=0)  # (surviving ops,)
                edge_w[e] = b[pos]
        return op_w, edge_w


class _ArchBoundCell(nn.Module):
    """A :class:`SearchCell` reading its architecture weights from an :class:`ArchWeights`.

    The architecture is referenced, not registered, so its parameters belong
    to the :class:`SearchNetwork` alone (one entry each in ``state_dict``).
    """

    def __init__(self, cell: SearchCell, arch: ArchWeights):
        super().__init__()
        self.cell = cell
        object.__setattr__(self, "_arch", arch)  # plain reference, not a sub-module

    def forward(self, skip: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
        op_w, edge_w = self._arch.weights()
        return self.cell(skip, up, op_w, edge_w)


class SearchNetwork(nn.Module):
    """A U-Net with a :class:`SearchCell` implanted at every skip level.

    Args:
        unet: a SkipUNet (``encoder``/``skip_modules``/``decoder`` contract);
            changed in place (its skip modules are wrapped).
        space: the search space.
        freeze_backbone: freeze every original parameter and keep the original
            modules in eval mode (BatchNorm statistics do not drift), even
            under ``.train()``.
    """

    def __init__(self, unet: nn.Module, space: SearchSpace, freeze_backbone: bool = True):
        super().__init__()
        self.space = space
        self.freeze_backbone = freeze_backbone
        self.spatial_dims = int(getattr(unet, "config", {}).get("spatial_dims", 2))
        self.n_levels = len(unet.skip_modules)
        if self.n_levels == 0:
            raise ValueError("the U-Net has no skip level to implant a cell into")
        n_archs = self.n_levels if space.per_level else 1
        self.archs = nn.ModuleList(ArchWeights(space) for _ in range(n_archs))
        frozen: list[nn.Module] = []
        if freeze_backbone:
            unet.requires_grad_(False)
            frozen = list(unet.modules())
        object.__setattr__(self, "_frozen", frozen)  # plain list, not sub-modules

        def make_cell(level: int, skip_ch: int, up_ch: int) -> nn.Module:
            cell = SearchCell(space, skip_ch, up_ch, self.spatial_dims)
            return _ArchBoundCell(cell, self.archs[self.arch_of_level(level)])

        self.unet = implant(unet, make_cell, self.spatial_dims)
        self.train(self.training)

    # Structure -----------------------------------------------------------------
    @property
    def n_archs(self) -> int:
        """Number of architectures (1 shared, or one per skip level)."""
        return len(self.archs)

    def arch_of_level(self, level: int) -> int:
        """The architecture skip ``level`` uses."""
        return level if self.space.per_level else 0

    def _arch(self, arch: int) -> ArchWeights:
        if not 0 <= arch < self.n_archs:
            raise IndexError(f"architecture {arch} does not exist; this network has {self.n_archs}")
        return self.archs[arch]

    def iac_skips(self) -> list[IACSkip]:
        """The implanted skip modules, by level."""
        return list(self.unet.skip_modules)

    def cells(self, arch: int | None = None) -> list[SearchCell]:
        """The search cells (of every level, or of the levels using ``arch``)."""
        return [
            skip.cell.cell
            for level, skip in enumerate(self.iac_skips())
            if arch is None or self.arch_of_level(level) == arch
        ]

    # Modes and parameter groups ------------------------------------------------
    def train(self, mode: bool = True) -> "SearchNetwork":
        """Set the mode; frozen backbone modules stay in eval mode."""
        super().train(mode)
        for module in self._frozen:
            module.training = False
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, *S) image -> (B, num_classes, *S) logits."""
        return self.unet(x)

    def arch_parameters(self) -> list[nn.Parameter]:
        """All architecture parameters in a fixed order (per arch: alphas by edge, then betas by node).

        Pruning replaces a parameter at the same position, so a list built
        before and after pruning lines up; alphas of dead edges stay (unused).
        """
        params = []
        for arch in self.archs:
            params.extend(arch.alpha)
            params.extend(arch.beta)
        return params

    def weight_parameters(self) -> list[nn.Parameter]:
        """Network weights to train: the cells only when the backbone is frozen."""
        arch_ids = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in arch_ids]

    def param_count(self, include_backbone: bool = True) -> int:
        """Number of parameter elements (architecture weights included)."""
        if include_backbone:
            return sum(p.numel() for p in self.parameters())
        cells = sum(p.numel() for skip in self.iac_skips() for p in (*skip.cell.parameters(), *skip.proj.parameters()))
        return cells + sum(p.numel() for p in self.arch_parameters())

    # Architecture state --------------------------------------------------------
    def edge_states(self, arch: int = 0) -> list[EdgeState]:
        """Every edge's surviving ops, softmax(alpha) and softmax(beta) weight (float64)."""
        a = self._arch(arch)
        states = []
        beta_of = {}
        for m, j in enumerate(self.space.node_ids):
            b = torch.softmax(a.beta[m].detach().double(), dim=0).cpu().numpy()
            beta_of.update({e: float(b[pos]) for pos, e in enumerate(a.alive_edges(j))})
        for e, (i, j) in enumerate(self.space.edges()):
            alpha = torch.softmax(a.alpha[e].detach().double(), dim=0).cpu().numpy()
            states.append(EdgeState(i, j, a.ops[e], alpha, beta_of.get(e, 0.0), a.alive[e], a.mass[e]))
        return states

    def genotype(self) -> Genotype:
        """The discrete genotype the current weights give (:func:`discretize`)."""
        cells = tuple(discretize(self.space, self.edge_states(a)) for a in range(self.n_archs))
        return Genotype(space=self.space, cells=cells)

    # Pruning -------------------------------------------------------------------
    def _check_edge(self, arch: int, edge_index: int) -> ArchWeights:
        a = self._arch(arch)
        if not 0 <= edge_index < len(a.ops):
            raise IndexError(f"edge {edge_index} does not exist; the cell has {len(a.ops)} edges")
        if not a.alive[edge_index]:
            i, j = self.space.edges()[edge_index]
            raise ValueError(f"edge {edge_index} ({edge_key(i, j)}) was pruned away")
        return a

    def prune_ops(
        self, arch: int, edge_index: int, keep: Sequence[str], kept_mass: float | None = None
    ) -> tuple[nn.Parameter, nn.Parameter, list[int]]:
        """Keep only ``keep`` on an edge, in every level sharing ``arch``.

        The dropped operations' modules are deleted; the edge's alpha is
        replaced by a new parameter holding the kept entries. The edge's
        ``mass`` is multiplied by ``kept_mass``, the share of softmax(alpha)
        the kept operations hold (computed from the current alpha when None;
        the policy passes the value it decided on).

        Returns:
            ``(old_alpha, new_alpha, kept_indices)``: ``new = old[kept_indices]``.
        """
        a = self._check_edge(arch, edge_index)
        current = a.ops[edge_index]
        unknown = [name for name in keep if name not in current]
        if unknown or not keep:
            raise ValueError(f"cannot keep {list(keep)} on edge {edge_index}: its operations are {list(current)}")
        kept = [pos for pos, name in enumerate(current) if name in set(keep)]
        names = tuple(current[pos] for pos in kept)
        old = a.alpha[edge_index]
        if kept_mass is None:
            kept_mass = math.fsum(torch.softmax(old.detach().double(), dim=0)[kept].tolist())
        a.mass[edge_index] *= float(kept_mass)
        new = nn.Parameter(old.detach()[kept].clone(), requires_grad=old.requires_grad)
        a.alpha[edge_index] = new
        a.ops[edge_index] = names
        key = edge_key(*self.space.edges()[edge_index])
        for cell in self.cells(arch):
            cell.edges[key] = cell.edges[key].keep(names)
        return old, new, kept

    def prune_edges(
        self, arch: int, node: int, keep_edges: Sequence[int]
    ) -> tuple[nn.Parameter, nn.Parameter, list[int]]:
        """Keep only ``keep_edges`` (edge indices) among ``node``'s alive incoming edges.

        The other edges die: their mixed ops are deleted in every level
        sharing ``arch`` and the node's beta shrinks to the kept edges.

        Returns:
            ``(old_beta, new_beta, kept_positions)``: ``new = old[kept_positions]``.
        """
        a = self._arch(arch)
        alive = a.alive_edges(node)
        wrong = [e for e in keep_edges if e not in alive]
        if wrong or not keep_edges:
            raise ValueError(f"cannot keep edges {list(keep_edges)} of node {node}: its alive edges are {alive}")
        m = node - self.space.n_inputs
        kept = [pos for pos, e in enumerate(alive) if e in set(keep_edges)]
        old = a.beta[m]
        new = nn.Parameter(old.detach()[kept].clone(), requires_grad=old.requires_grad)
        a.beta[m] = new
        for e in alive:
            if e not in set(keep_edges):
                a.alive[e] = False
                key = edge_key(*self.space.edges()[e])
                for cell in self.cells(arch):
                    del cell.edges[key]
        return old, new, kept

    def masks(self) -> dict[str, Any]:
        """JSON-able surviving operations and alive edges of every architecture."""
        return {
            "archs": [
                {
                    "edges": [
                        {"edge": edge_key(i, j), "ops": list(a.ops[e]), "alive": a.alive[e], "mass": a.mass[e]}
                        for e, (i, j) in enumerate(self.space.edges())
                    ]
                }
                for a in self.archs
            ]
        }

    def apply_masks(self, masks: Mapping[str, Any]) -> None:
        """Prune this network to ``masks`` (from :meth:`masks`); do it before ``load_state_dict``.

        Raises:
            ValueError: the masks do not describe this network or would revive a pruned part.
        """
        archs = masks.get("archs") if isinstance(masks, Mapping) else None
        if not isinstance(archs, list) or len(archs) != self.n_archs:
            raise ValueError(f"masks must hold 'archs', a list of {self.n_archs} architectures")
        edges = self.space.edges()
        for arch, spec in enumerate(archs):
            if len(spec["edges"]) != len(edges):
                raise ValueError(f"masks of arch {arch} have {len(spec['edges'])} edges; the cell has {len(edges)}")
            a = self.archs[arch]
            for e, (entry, (i, j)) in enumerate(zip(spec["edges"], edges)):
                if entry["edge"] != edge_key(i, j):
                    raise ValueError(f"mask edge {e} is {entry['edge']!r}; expected {edge_key(i, j)!r}")
                if entry["alive"] and not a.alive[e]:
                    raise ValueError(f"mask would revive the pruned edge {entry['edge']}")
                revived = [name for name in entry["ops"] if name not in a.ops[e]]
                if revived:
                    raise ValueError(f"mask would revive operations {revived} of edge {entry['edge']}")
                if tuple(entry["ops"]) != a.ops[e]:
                    if not a.alive[e]:
                        raise ValueError(f"mask changes the operations of the pruned edge {entry['edge']}")
                    self.prune_ops(arch, e, entry["ops"])
                a.mass[e] = float(entry.get("mass", 1.0))  # as saved, not recomputed from fresh weights
            for j in self.space.node_ids:
                keep = [e for e in a.alive_edges(j) if spec["edges"][e]["alive"]]
                if keep != a.alive_edges(j):
                    self.prune_edges(arch, j, keep)
