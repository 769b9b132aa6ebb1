"""thop 0.0.22: its rules where they differ from thop 0.1.1 (``conventions/thop.py``).

``THOP_0022``: thop 0.0.22 (2019, ``profile(model, input_size=...)``), the version the widely read
articles ran (DenseNet-121: "2914598912.0"). Rows: every module without children (a "leaf"),
with or without a rule. Per leaf, ``total_ops`` is *assigned* by its hook at every call (the last
call wins) as a float32 tensor, and ``total_params`` is a float32 sum of its parameters; the
totals are float32 sums over the leaves in ``modules()`` order. Exact types only.
"""

from __future__ import annotations

import struct

from reconcile.conventions import common
from reconcile.conventions.base import Convention, LayerPrediction, Prediction, RuleDoc, Term, n_in, n_out, numel
from reconcile.records import CallRecord, ModuleRow, NativeCount, Phrase

_NN = "torch.nn.modules."


def f32(x: int | float) -> int:
    """``x`` rounded to the nearest float32 (ties to even), as ``torch.Tensor([x])`` stores it."""
    return int(struct.unpack("f", struct.pack("f", float(x)))[0])


def f32_sum(values: list[int]) -> int:
    """A float32 running sum, as ``total += m.total_ops`` over float32 tensors: rounded at every step."""
    total = 0
    for v in values:
        total = f32(total + v)
    return total


# ===== thop 0.0.22 =================================================================================


def _t(module: str, *names: str) -> set[str]:
    return {f"{_NN}{module}.{n}" for n in names}


def _conv(a: dict, c: CallRecord) -> tuple[int, dict[str, int]]:
    """count_convNd: in_channels x N_out x (K + 1 if bias) // groups: the bias as Cin/g more MACs per output."""
    k = numel(a["kernel_size"])
    bias = 1 if a.get("has_bias") else 0
    v = a["in_channels"] * n_out(c) * (k + bias) // a["groups"]
    macs = a["in_channels"] * n_out(c) * k // a["groups"]
    return v, {"bias": v - macs} if v != macs else {}


def _convt(a: dict, c: CallRecord) -> tuple[int, dict[str, int]]:
    """count_convtranspose2d: N_out x (K x Cin // groups + 1 if bias): per output, not per input."""
    v = n_out(c) * (numel(a["kernel_size"]) * a["in_channels"] // a["groups"] + (1 if a.get("has_bias") else 0))
    return v, {}


def _bn(a: dict, c: CallRecord) -> tuple[int, dict[str, int]]:
    """count_bn: 4 per input element (subtract, divide, gamma, beta), affine or not."""
    return 4 * n_in(c), {"norm": 4 * n_in(c)}


def _relu(a: dict, c: CallRecord) -> tuple[int, dict[str, int]]:
    """count_relu: 1 per input element."""
    return n_in(c), {"activation": n_in(c)}


def _kernel(k: object) -> int:
    """``torch.prod(torch.Tensor([kernel_size]))``: an int kernel is ONE factor (3, not 3 x 3)."""
    return numel(k) if isinstance(k, tuple) else int(k)


def _maxpool(a: dict, c: CallRecord) -> tuple[int, dict[str, int]]:
    """count_maxpool: prod(kernel_size as given) per output element (an int kernel k counts k, not k^d)."""
    v = f32(_kernel(a["kernel_size"]) * n_out(c))
    return v, {"pool": v}


def _adaptive_window(c: CallRecord, output_size: object) -> int:
    s_in = c.inputs[0].shape[2:]
    outs = output_size if isinstance(output_size, tuple) else (output_size,) * len(s_in)
    return numel(tuple(i // o for i, o in zip(s_in, outs)))


def _adaptive_max(a: dict, c: CallRecord) -> tuple[int, dict[str, int]]:
    """count_adap_maxpool: prod(S_in // output_size) per output element."""
    v = f32(_adaptive_window(c, a["output_size"]) * n_out(c))
    return v, {"pool": v}


def _avgpool(a: dict, c: CallRecord) -> tuple[int, dict[str, int]]:
    """count_avgpool: (prod(kernel_size as given) + 1) per output element."""
    v = f32((_kernel(a["kernel_size"]) + 1) * n_out(c))
    return v, {"pool": v}


def _adaptive_avg(a: dict, c: CallRecord) -> tuple[int, dict[str, int]]:
    """count_adap_avgpool: (prod(S_in // output_size) + 1) per output element."""
    v = f32((_adaptive_window(c, a["output_size"]) + 1) * n_out(c))
    return v, {"pool": v}


def _linear(a: dict, c: CallRecord) -> tuple[int, dict[str, int]]:
    """count_linear: (in + in - 1) per output element: multiplies and adds apart, no bias."""
    macs = a["in_features"] * n_out(c)
    return 2 * macs - n_out(c), {"mac_vs_flop": macs, "per_output_minus_one": -n_out(c)}


RULES_0022 = {
    **dict.fromkeys(_t("conv", "Conv1d", "Conv2d", "Conv3d"), _conv),
    **dict.fromkeys(_t("conv", "ConvTranspose2d"), _convt),
    **dict.fromkeys(_t("batchnorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d"), _bn),
    **dict.fromkeys(_t("activation", "ReLU", "ReLU6", "LeakyReLU"), _relu),
    **dict.fromkeys(_t("pooling", "MaxPool1d", "MaxPool2d", "MaxPool3d"), _maxpool),
    **dict.fromkeys(_t("pooling", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d"), _adaptive_max),
    **dict.fromkeys(_t("pooling", "AvgPool1d", "AvgPool2d", "AvgPool3d"), _avgpool),
    **dict.fromkeys(_t("pooling", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d"), _adaptive_avg),
    **dict.fromkeys(_t("linear", "Linear"), _linear),
}


class Thop0022Convention(Convention):
    tool = "thop@0.0.22"
    unit = "MACs"
    metric = "ops"
    headline_metric = "macs"
    metrics = {"macs": "ops", "params": "params"}
    rules = (
        RuleDoc("unit", "MACs, but Linear as multiplies plus adds; float32 counters (large counts rounded)"),
        RuleDoc("matching", "forward hooks on modules WITHOUT children whose exact type has a rule; a parent's own work unseen"),
        *(RuleDoc(name, (fn.__doc__ or "").split(": ", 1)[-1]) for name, fn in (
            ("Conv1d/2d/3d", _conv), ("ConvTranspose2d", _convt), ("BatchNorm1d/2d/3d", _bn),
            ("ReLU / ReLU6 / LeakyReLU", _relu), ("MaxPool", _maxpool), ("AdaptiveMaxPool", _adaptive_max),
            ("AvgPool", _avgpool), ("AdaptiveAvgPool", _adaptive_avg), ("Linear", _linear))),
        RuleDoc("Dropout and every other type", "0 (Dropout's rule is None: no hook)"),
        RuleDoc("repeated modules", "the hook assigns total_ops: the LAST call only"),
        RuleDoc("params", "per leaf, all its parameters (run or not), float32; parameters of modules with children missed"),
        RuleDoc("totals", "float32 running sums over the leaves in modules() order"),
        RuleDoc("input", "its own torch.zeros(input_size), one float32 input"),
    )

    def cannot_run(self, native: NativeCount) -> str | None:
        from reconcile.conventions.base import integer_inputs

        if len(native.input_shapes) != 1:
            return f"thop 0.0.22 takes one input_size; this model takes {len(native.input_shapes)} inputs"
        if integer_inputs(native):
            return (f"thop 0.0.22 feeds torch.zeros(input_size), float32; this model takes "
                    f"{native.input_dtypes[0]} values (ids)")
        return None

    def predict(self, native: NativeCount) -> Prediction:
        tree = common.Tree(native)
        layers = [self._row(tree, row) for row in native.rows if row.name and not tree.children.get(row.name)]
        if not layers:  # a childless root is thop's only leaf
            layers = [self._row(tree, tree.rows[""])]
        ops = [p.predicted["ops"] for p in layers]  # modules() order: the native rows' order
        params = [p.predicted["params"] for p in layers]
        layers.extend(common.uncovered_rows(tree, layers, "ops", "params", self.tool))
        total_ops, total_params = f32_sum(ops), f32_sum(params)
        headline_terms = {}
        for key, total, parts in (("macs", total_ops, ops), ("params", total_params, params)):
            if total != sum(parts):
                headline_terms[key] = (Term("float32", total - sum(parts), "thop_0022.float32.2",
                                            Phrase("thop 0.0.22 sums its rows in float32: "
                                            "{sum} comes out as {total}", {"sum": sum(parts), "total": total})),)
        return Prediction(self.tool, self.metric, self.unit, tuple(layers),
                          headline={"macs": total_ops, "params": total_params},
                          headline_terms=headline_terms,
                          headline_reference={"macs": sum(ops), "params": sum(params)})

    def _row(self, tree: common.Tree, row: ModuleRow) -> LayerPrediction:
        cls = row.attrs.get("class", "")
        ref_ops, ref_params = tree.macs(row.name), tree.params(row.name)
        terms: list[Term] = []
        rule = RULES_0022.get(cls)
        if rule is None:
            ops = 0
            if ref_ops or tree.flops(row.name):
                terms.append(Term("unsupported_module", -ref_ops, "thop_0022.unsupported_module",
                                  Phrase("thop 0.0.22 has no rule for {type!s}: its "
                                  "{ref_ops} MACs and {flops} FLOPs are not counted", {"type": row.type,
                                                                                       "ref_ops": ref_ops,
                                                                                       "flops": tree.flops(row.name)}),
                                  flops=-tree.flops(row.name)))
        elif not row.call_records:
            ops = 0
        else:
            summed = 0
            parts: dict[str, int] = {}
            for c in row.call_records:
                v, p = rule(row.attrs, c)
                summed += v
                for k, amount in p.items():
                    parts[k] = parts.get(k, 0) + amount
            for cause, amount in parts.items():
                if amount:
                    terms.append(Term(cause, amount, "thop_0022.hook_extra",
                                      Phrase("thop 0.0.22 counts {type!s}'s {replace!s}: "
                                      "{amount} ({rstrip!s})", {"type": row.type, "replace": cause.replace('_', ' '),
                                                                "amount": amount,
                                                                "rstrip": (rule.__doc__ or '').split(': ', 1)[-1].rstrip('.')})))
            rest = summed - ref_ops - sum(parts.values())
            if rest:
                terms.append(Term("formula", rest, "thop_0022.formula.2",
                                  Phrase("thop 0.0.22's {type!s} formula gives {v} "
                                  "MACs where the MAC count is {ref_ops}", {"type": row.type, "v": ref_ops + rest,
                                                                            "ref_ops": ref_ops})))
            last = rule(row.attrs, row.call_records[-1])[0]
            if last != summed:
                terms.append(Term("repeated_calls", last - summed, "thop_0022.repeated_calls",
                                  Phrase("{type!s} ran {calls!s} times and thop 0.0.22 "
                                  "keeps the last call's count only: {last} of {summed}", {"type": row.type,
                                                                                           "calls": row.calls,
                                                                                           "last": last,
                                                                                           "summed": summed})))
            ops = f32(last)
            if ops != last:
                terms.append(Term("float32", ops - last, "thop_0022.float32.3",
                                  Phrase("thop 0.0.22 stores {last} as a float32: {ops}", {"last": last, "ops": ops})))
        sizes = self._param_sizes(tree, row)
        params_exact, params = sum(sizes), f32_sum(sizes)
        p_terms: tuple[Term, ...] = ()
        if params_exact != ref_params:
            p_terms += (Term("params_tied", params_exact - ref_params, "thop_0022.params_tied",
                             Phrase("thop 0.0.22 counts every parameter "
                             "{type!s} holds, {v} of them registered first "
                             "under another module", {"type": row.type, "v": params_exact - ref_params})),)
        if params != params_exact:
            p_terms += (Term("float32", params - params_exact, "thop_0022.float32",
                             Phrase("thop 0.0.22 sums {type!s}'s parameters in float32: "
                             "{params_exact} comes out as {params}", {"type": row.type, "params_exact": params_exact,
                                                                      "params": params})),)
        return LayerPrediction(row.name, row.type, row.calls, {"ops": ref_ops, "params": ref_params},
                               {"ops": ops, "params": params},
                               {k: v for k, v in (("ops", tuple(terms)), ("params", p_terms)) if v})

    @staticmethod
    def _param_sizes(tree: common.Tree, row: ModuleRow) -> list[int]:
        """``m.parameters()`` of a leaf: every tensor registered on it, under any name (tied ones too)."""
        prefix = row.name + "." if row.name else ""
        return [p.numel for p in tree.native.params
                if any(n.startswith(prefix) and "." not in n[len(prefix):] for n in (p.name, *p.aliases))]


THOP_0022 = Thop0022Convention()
