"""Mixture-of-experts products: transformers' experts (Mixtral, Qwen-MoE, ...) run
``aten._grouped_mm``, one matrix product per expert over the rows routed to it. Native counts
M * K * N MACs for an (M, K) input against (G, K, N) expert weights (each row meets exactly one
expert's matrix, whatever the routing); the tools that have no rule for it count 0 and say so.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from reconcile.counter import count
from tests.harness import adapter, assert_explained, explain

transformers = pytest.importorskip("transformers")


class Grouped(torch.nn.Module):
    """(M, K) rows against G expert matrices (G, K, N), groups given by cumulative offsets."""

    def __init__(self, groups: int, k: int, n: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(groups, k, n))

    def forward(self, x):
        offs = torch.tensor([2, 5, 5, x.shape[0]], dtype=torch.int32)  # group sizes 2, 3, 0, M - 5
        return torch._grouped_mm(x, self.w, offs=offs)


def test_grouped_mm_rule_by_hand():
    # 7 rows of K = 8 against 4 experts of 8 x 12: each row meets one expert, 7 * 8 * 12 = 672 MACs
    # (an expert with no rows costs nothing; the sizes of the groups do not change the total)
    n = count(Grouped(4, 8, 12), (torch.randn(7, 8),))
    assert n.totals["macs"] == 672
    assert n.totals["unknown_ops"] == 0


def _tiny_mixtral():
    cfg = transformers.MixtralConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, num_key_value_heads=1, vocab_size=50,
                                     num_local_experts=4, num_experts_per_tok=2, use_cache=False)
    torch.manual_seed(0)
    return transformers.MixtralForCausalLM(cfg).eval()


# 6 tokens, hidden 16, intermediate 32, 4 experts, top 2: 6 * 2 = 12 token-expert rows.
# gate_up (16 -> 2 * 32): 12 * 16 * 64 = 12,288; down (32 -> 16): 12 * 32 * 16 = 6,144; 18,432 MACs
EXPERT_MACS = 18432
IDS = (torch.randint(0, 50, (1, 6), generator=torch.Generator().manual_seed(1)),)


def test_mixtral_experts_count_the_routed_rows():
    n = count(_tiny_mixtral(), IDS)
    experts = next(r for r in n.rows if r.name == "model.layers.0.mlp.experts")
    assert experts.macs == EXPERT_MACS
    assert experts.ops.get("aten::_grouped_mm") == 2
    assert n.totals["unknown_ops"] == 0


@pytest.mark.parametrize("tool,cause", [("torchprofile", "unsupported_op"), ("fvcore", "unsupported_op")])
def test_tools_without_a_grouped_mm_rule_count_0(tool, cause):
    # neither torchprofile (no handler) nor fvcore (no handle) counts aten::_grouped_mm: the
    # experts' 18,432 MACs are a named cause, and everything else is explained as before
    model = _tiny_mixtral()
    run = adapter(tool).run(model, IDS)
    assert run.status == "ok", f"{run.error_type}: {run.error_message}"
    native = count(model, IDS)
    # the native count with reconcile's own trace, as the pipeline gives the traced tools (Tool.traced)
    native = replace(native, traced=adapter("native-trace").run(model, IDS).detail)
    ex = explain(tool, run, native)
    experts = next(le for le in ex.layers if le.module == "model.layers.0.mlp.experts")
    metric = next(iter(experts.causes))  # the tool's one op metric (MACs or flops)
    # fvcore's "flops" are MACs: the amount is -18,432 in either unit
    assert [c.id for c in experts.causes[metric] if c.amount == -EXPERT_MACS] == [cause], experts.causes
    assert_explained(ex)
