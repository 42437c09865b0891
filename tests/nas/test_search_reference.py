"""A recorded reference search: the same seed on one CPU thread gives the same cell.

The settings give the search clear decisions (a large architecture learning
rate, no pull to uniform, four operations), so the recorded genotype is a
property of the algorithm and its random stream, not of rounding: every
chosen operation leads the next candidate of its edge, and every kept edge
leads the dropped one of its node, by clear margins (asserted below). A
change to the loop that alters this genotype changes what the search does.
"""

from __future__ import annotations

import pytest
import torch

from iac.config import SearchConfig

REFERENCE = "n2<-avg_pool_3x3(0),skip_connect(1) | n3<-avg_pool_3x3(0),avg_pool_3x3(2)"
SETTINGS = dict(
    epochs=6, warmup_epochs=1, batch_size=4, cell_channels=4, nodes=2, device="cpu", seed=0,
    arch_lr=0.1, arch_weight_decay=0.0, ops=("none", "skip_connect", "avg_pool_3x3", "sep_conv_3x3"),
)
MARGIN = 0.05  # smallest lead of a decision over its runner-up (softmax weight or edge score)


@pytest.fixture
def data(tiny_phantom):
    return tiny_phantom


def _final_edges(result):
    return result.trajectory["epochs"][-1]["archs"][0]["edges"]


@pytest.mark.parametrize("recompute_backward", ["true", "false"])
def test_seeded_one_thread_search_gives_the_recorded_genotype(data, single_thread, recompute_backward):
    """Also without the recomputation in the backward pass: it changes memory and time, not the cell."""
    from iac.models import create_backbone
    from iac.nas.pruning import NoPruning
    from iac.nas.search import run_search

    cfg = SearchConfig(data=data.root, recompute_backward=recompute_backward, **SETTINGS)
    torch.manual_seed(0)
    unet = create_backbone("unet", data.in_channels, data.num_classes)
    result = run_search(cfg, unet, data, NoPruning(), progress=False)

    edges = {e["edge"]: e for e in _final_edges(result)}
    # Clear margins: operations on every kept edge, kept edges over dropped ones.
    for cell in result.genotype.cells:
        for n, node in enumerate(cell.nodes):
            dst = n + 2
            incoming = [e for k, e in edges.items() if k.endswith(f"->{dst}")]
            scores = {}
            for e in incoming:
                w = {op: p for op, p in zip(e["ops"], e["alpha"]) if op != "none"}
                ranked = sorted(w.values(), reverse=True)
                scores[e["edge"]] = e["beta"] * ranked[0]
            for op, src in node:
                e = edges[f"{src}->{dst}"]
                w = sorted((p for o, p in zip(e["ops"], e["alpha"]) if o != "none"), reverse=True)
                assert w[0] - w[1] >= MARGIN, (e["edge"], w)
            kept = sorted(scores.values(), reverse=True)
            if len(kept) > 2:
                assert kept[1] - kept[2] >= MARGIN * kept[1], (dst, kept)
    assert str(result.genotype) == REFERENCE
