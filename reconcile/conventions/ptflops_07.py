"""ptflops 0.7.0 (tool "ptflops@0.7": ``pip install ptflops==0.7``, what the 2021-2022 articles
ran): 0.7.5's module-hook convention (``conventions.ptflops``, hooks in ``ptflops_hooks``) with 0.7.0's own conv and linear
formulas, no patched functionals, a batch counter of 1 and a total that is not truncated.
"""

from __future__ import annotations

from reconcile.conventions.base import RuleDoc, numel
from reconcile.conventions.ptflops import PtflopsConvention
from reconcile.conventions.ptflops_hooks import HOOKS, Hook, Parts
from reconcile.conventions.ptflops_shared import NN, call_shape, out_shape, types
from reconcile.records import ModuleRow, NativeCount



def _conv_07(row: ModuleRow, _names: frozenset[str]) -> Parts:
    """0.7.0: K x Cin x Cout/g per *output* position, transposed convolutions too (0.7.5: input)."""
    a = row.attrs
    per = numel(a["kernel_size"]) * a["in_channels"] * (a["out_channels"] // a["groups"])
    macs = bias = 0
    for c in row.call_records:
        x, out = call_shape(c), out_shape(c)
        macs += per * x[0] * numel(out[2:])
        if a.get("has_bias"):
            bias += x[0] * numel(out[1:])
    return {"macs": (macs, "K x Cin x Cout/g per output position"), "bias": (bias, "one add per output element")}


def _linear_07(row: ModuleRow, _names: frozenset[str]) -> Parts:
    """0.7.0: N_in x out + out: the bias counted once per call, not once per input row (0.7.5)."""
    macs = bias = 0
    for c in row.call_records:
        x, out = call_shape(c), out_shape(c)
        macs += x[-1] * out[-1] * numel(x[:-1])
        if row.attrs.get("has_bias"):
            bias += out[-1]
    return {"macs": (macs, "in x out per row"), "bias": (bias, "one add per output feature, once per call")}


# 0.7.0's MODULES_MAPPING: 0.7.5's without timm Attention and DeformConv2d (added in 0.7.1 / 0.7.2),
# with its own conv and linear formulas
HOOKS_07: dict[str, Hook] = {k: v for k, v in HOOKS.items()
                             if k not in ("timm.layers.attention.Attention", "torchvision.ops.deform_conv.DeformConv2d")}
for _cls in types("conv", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"):
    HOOKS_07[_cls] = Hook("Conv / ConvTranspose (0.7.0): K x Cin x Cout/g x B x S_out, transposed too, + N_out bias", _conv_07)
HOOKS_07[f"{NN}linear.Linear"] = Hook("Linear (0.7.0): N_in x out + out bias once per call", _linear_07)


class Ptflops07Convention(PtflopsConvention):
    """ptflops 0.7.0: 0.7.5's module hooks (``HOOKS_07``), no patched functionals or tensor ops,
    the total not truncated (``flops_sum / batch``, a float)."""

    tool = "ptflops@0.7"
    per_sample = False  # its batch counter is always 1
    hooks = HOOKS_07
    count_functional = False
    truncates = False

    def batch_counter(self, native: NativeCount) -> int:
        """1: 0.7.0 either builds its own (1, *input_res) input or takes the inputs as keywords
        (``model(**input_constructor(res))``), which its batch counter does not see."""
        return 1
    rules = (
        RuleDoc("unit", "MACs; bias adds, norms, activations and pools counted as listed; module counts per sample"),
        RuleDoc("matching", "forward hooks on modules whose exact type has a rule; a hooked module is atomic"),
        *{h.doc: RuleDoc(h.doc.split(":")[0], h.doc.split(":", 1)[1].strip()) for h in HOOKS_07.values()}.values(),
        RuleDoc("functionals", "none patched (0.7.1 added F.*, torch.matmul/add/mul): a parent's own forward is not seen, "
                "and nn.ReLU / pools are counted once (0.7.5 counts them twice)"),
        RuleDoc("params", "trainable only: per row sum(module.parameters()); total once per tensor"),
        RuleDoc("batch", "its own (1, *input_res) input, or keyword inputs (batch counter 1): counts whole batch; "
                "the total is a float, not truncated"),
    )


CONVENTION = Ptflops07Convention()
