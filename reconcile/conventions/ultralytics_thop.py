"""ultralytics-thop 2.2.3: its rules where they differ from thop 0.1.1 (``conventions/thop.py``).

``ULTRALYTICS``: ultralytics-thop 2.2.3, the maintained fork that installs the same ``thop``
module: rules found through the class's MRO, norms of every family, exact pooling windows,
``nn.MultiheadAttention`` and the functional products (``torch.matmul``, ``F.linear``, ``einsum``,
SDPA) run outside every module with a rule of its own; parameters are ``model.parameters()``.
"""

from __future__ import annotations


from reconcile.conventions import common
from reconcile.conventions.base import Convention, LayerPrediction, Prediction, RuleDoc, Term, n_in, n_out, numel
from reconcile.records import CallRecord, ModuleRow, NativeCount, Phrase

_NN = "torch.nn.modules."


# Parts of one module's count: cause id ("macs" for the multiply-accumulates) -> amount
Parts = dict[str, int]


def _u_conv(a: dict, c: CallRecord) -> Parts:
    """count_convNd: N_out x Cin/g x K (bias never counted)."""
    return {"macs": n_out(c) * (c.inputs[0].shape[-(len(_ksize(a)) + 1)] // a["groups"]) * numel(_ksize(a))}


def _u_convt(a: dict, c: CallRecord) -> Parts:
    """count_convtNd: N_in x Cout/g x K: per input element (thop 0.1.1: per output element)."""
    return {"macs": n_in(c) * (c.outputs[0].shape[-(len(_ksize(a)) + 1)] // a["groups"]) * numel(_ksize(a))}


def _ksize(a: dict) -> tuple[int, ...]:
    k = a["kernel_size"]
    return k if isinstance(k, tuple) else (k,)


def _u_norm(a: dict, c: CallRecord) -> Parts:
    """count_normalization: 2 x N_in, doubled when affine: every BatchNorm / InstanceNorm (via _NormBase),
    LayerNorm, GroupNorm and RMSNorm (thop 0.1.1: no GroupNorm, RMSNorm, SyncBatchNorm subclasses)."""
    affine = a.get("affine", False) or a.get("elementwise_affine", False)
    return {"norm": 2 * n_in(c) * (2 if affine else 1)}


def _u_prelu(a: dict, c: CallRecord) -> Parts:
    """count_prelu: N_in, in eval mode only."""
    return {"activation": 0 if a.get("training") else n_in(c)}


def _u_softmax_cost(rows: int, n: int) -> int:
    return rows * (n + max(n - 1, 0) + n)


def _u_softmax(a: dict, c: CallRecord, kind: str = "Softmax") -> Parts:
    """count_softmax: (N_in / n) x (3n - 1), n the softmax dim; Softmin + N_in, LogSoftmax + N_in / n."""
    x = c.inputs[0].shape
    dim = -3 if kind == "Softmax2d" else a.get("dim")
    if dim is None:
        dim = 0 if len(x) in (0, 1, 3) else 1
    n = x[dim] if x else 1
    rows = numel(x) // n if n else 0
    v = _u_softmax_cost(rows, n) + (numel(x) if kind == "Softmin" else rows if kind == "LogSoftmax" else 0)
    return {"softmax": v}


def _u_avgpool(a: dict, c: CallRecord, kind: str = "AvgPool2d") -> Parts:
    """count_avgpool: one add per input element inside a window (padding by count_include_pad) + one divide per output."""
    kernel = a["kernel_size"]
    if isinstance(kernel, int):
        kernel = (kernel,) * (3 if kind == "AvgPool3d" else 2)
    d = len(kernel)
    stride = a["stride"] if isinstance(a["stride"], tuple) else (a["stride"],) * d
    padding = a["padding"] if isinstance(a["padding"], tuple) else (a["padding"],) * d
    x, y = c.inputs[0].shape, c.outputs[0].shape
    windows = 1
    for size, out, k, s, p in zip(x[-d:], y[-d:], kernel, stride, padding):
        lower, upper = (-p, size + p) if a.get("count_include_pad", True) else (0, size)
        windows *= sum(max(min(i * s - p + k, upper) - max(i * s - p, lower), 0) for i in range(out))
    return {"pool": numel(x[:-d]) * windows + numel(y)}


def _u_adaptive_avg(a: dict, c: CallRecord) -> Parts:
    """count_adap_avgpool: the exact windows torch slices (one add per pooled input) + one divide per output."""
    v = 1
    for i, o in zip(c.inputs[0].shape, c.outputs[0].shape):
        v *= o if i == o else sum(-(-(j + 1) * i // o) - j * i // o for j in range(o))
    return {"pool": v + n_out(c)}


def _u_linear(a: dict, c: CallRecord) -> Parts:
    """count_linear: in_features x N_out (no bias)."""
    return {"macs": a["in_features"] * n_out(c)}


def _u_bilinear(a: dict, c: CallRecord) -> Parts:
    """count_bilinear: (in1 + 1) x in2 x N_out."""
    return {"macs": (a["in1_features"] + 1) * a["in2_features"] * n_out(c)}


_U_UPSAMPLE = {"nearest": 0, "nearest-exact": 0, "linear": 5, "bilinear": 11, "bicubic": 259, "trilinear": 31}


def _u_upsample(a: dict, c: CallRecord) -> Parts:
    """count_upsample: per output element nearest 0, linear 5, bilinear 11, bicubic 259, trilinear 31."""
    return {"interpolate": _U_UPSAMPLE.get(a.get("mode", "nearest"), 0) * n_out(c)}


def _u_mha(a: dict, c: CallRecord) -> Parts:
    """count_multihead_attention: B x [E x (2 L E + S (kdim + vdim)) + 2 L S E] + softmax(B h L rows of S)."""
    out = c.outputs[0].shape
    batch_first = a.get("batch_first", False)
    tgt = out[-2] if batch_first or len(out) == 2 else out[0]
    batch = 1 if len(out) == 2 else out[0 if batch_first else 1]
    appended = (1 if a.get("has_bias_k") else 0) + (1 if a.get("add_zero_attn") else 0)
    if len(c.outputs) > 1:  # attention weights returned: their last dim is what was attended
        attended = c.outputs[1].shape[-1]
    else:
        key = c.inputs[1].shape if len(c.inputs) > 1 else c.inputs[0].shape
        attended = (key[-2] if batch_first or len(key) == 2 else key[0]) + appended
    e = a["embed_dim"]
    projections = e * (2 * tgt * e + (attended - appended) * (a["kdim"] + a["vdim"]))
    attention = 2 * tgt * attended * e
    return {"macs": batch * (projections + attention),
            "softmax": _u_softmax_cost(batch * a["num_heads"] * tgt, attended)}


def _u_cell(kind: str, i: int, h: int, bias: bool, proj: int = 0) -> tuple[int, int, int]:
    """One cell evaluation as (MACs, bias adds, gate ops), from rnn_hooks.py."""
    if kind.startswith("RNN"):  # h(i+h) + h (+2h)
        return h * (i + h), 2 * h if bias else 0, h
    if kind.startswith("GRU"):  # 3[(h+i)h + h] (+6h) + h + 3h
        return 3 * h * (i + h), 6 * h if bias else 0, 3 * h + h + 3 * h
    r = proj or h  # LSTM: 4[(i+r)h + h] (+8h) + 3h + h + h*proj
    return 4 * h * (i + r) + h * proj, 8 * h if bias else 0, 4 * h + 3 * h + h


def _u_rnn(a: dict, c: CallRecord, kind: str = "LSTM") -> Parts:
    """count_rnn / gru / lstm: per cell evaluation (L x B, or L unbatched) the cells of every layer and direction."""
    x = c.inputs[0].shape
    evaluations = x[0] if len(x) == 2 else x[0] * x[1]
    h, bias, dirs = a["hidden_size"], a["bias"], 2 if a["bidirectional"] else 1
    proj = a.get("proj_size", 0) or 0
    per = tuple(v * dirs for v in _u_cell(kind, a["input_size"], h, bias, proj))
    for _ in range(a["num_layers"] - 1):
        nxt = _u_cell(kind, (proj or h) * dirs, h, bias, proj)
        per = tuple(p + v * dirs for p, v in zip(per, nxt))
    macs, b, gates = (evaluations * v for v in per)
    return {"macs": macs, "bias": b, "rnn_gates": gates}


def _u_rnn_cell(a: dict, c: CallRecord, kind: str = "LSTMCell") -> Parts:
    """count_*_cell: one cell per sample (1 for an unbatched 1-D input)."""
    x = c.inputs[0].shape
    units = x[0] if len(x) == 2 else 1
    macs, b, gates = (units * v for v in _u_cell(kind, a["input_size"], a["hidden_size"], a["bias"]))
    return {"macs": macs, "bias": b, "rnn_gates": gates}


def _zero(a: dict, c: CallRecord) -> Parts:
    return {}


def _n(module: str, *names: str) -> list[str]:
    return [f"{_NN}{module}.{n}" for n in names]


# register_hooks of ultralytics-thop 2.2.3, by class qualname; found through the module's MRO.
# None: zero_ops (no hook: it neither counts nor hides the functional products inside it).
U_RULES: dict[str, object] = {
    **dict.fromkeys(_n("padding", "_ConstantPadNd", "_ReflectionPadNd", "_ReplicationPadNd", "_CircularPadNd")
                    + _n("dropout", "_DropoutNd")
                    + _n("activation", "ReLU", "ReLU6", "LeakyReLU")
                    + _n("pooling", "MaxPool1d", "MaxPool2d", "MaxPool3d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d",
                         "AdaptiveMaxPool3d", "FractionalMaxPool2d", "FractionalMaxPool3d", "_MaxUnpoolNd")
                    + _n("container", "Sequential", "ModuleList", "ModuleDict", "ParameterList", "ParameterDict")
                    + _n("linear", "Identity") + _n("flatten", "Flatten", "Unflatten") + _n("fold", "Unfold")
                    + _n("pixelshuffle", "PixelShuffle", "PixelUnshuffle") + _n("channelshuffle", "ChannelShuffle"),
                    None),
    **dict.fromkeys(_n("conv", "Conv1d", "Conv2d", "Conv3d"), _u_conv),
    **dict.fromkeys(_n("conv", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"), _u_convt),
    **dict.fromkeys(_n("batchnorm", "_NormBase") + _n("normalization", "LayerNorm", "GroupNorm", "RMSNorm"), _u_norm),
    f"{_NN}activation.PReLU": _u_prelu,
    **{f"{_NN}activation.{k}": (lambda a, c, k=k: _u_softmax(a, c, k)) for k in ("Softmax", "LogSoftmax", "Softmin", "Softmax2d")},
    **{f"{_NN}pooling.AvgPool{d}d": (lambda a, c, d=d: _u_avgpool(a, c, f"AvgPool{d}d")) for d in (1, 2, 3)},
    **dict.fromkeys(_n("pooling", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d"), _u_adaptive_avg),
    f"{_NN}linear.Linear": _u_linear,
    f"{_NN}linear.Bilinear": _u_bilinear,
    **dict.fromkeys(_n("upsampling", "Upsample", "UpsamplingBilinear2d", "UpsamplingNearest2d"), _u_upsample),
    **{f"{_NN}rnn.{k}": (lambda a, c, k=k: _u_rnn(a, c, k)) for k in ("RNN", "GRU", "LSTM")},
    **{f"{_NN}rnn.{k}": (lambda a, c, k=k: _u_rnn_cell(a, c, k)) for k in ("RNNCell", "GRUCell", "LSTMCell")},
    f"{_NN}sparse.Embedding": _zero,  # count_embedding: 0, but a rule of its own (it hides functionals)
    f"{_NN}activation.MultiheadAttention": _u_mha,
}

# functional_hooks: the products its TorchFunctionMode counts outside every module with a rule of
# its own, by the native call record's label -> how (each counts the call's multiply-accumulates)
U_FUNCTIONAL = {
    "torch.matmul": "y.numel() x A.shape[-1]", "Tensor.matmul": "y.numel() x A.shape[-1]",
    "Tensor.__matmul__": "y.numel() x A.shape[-1]", "torch.bmm": "y.numel() x A.shape[-1]",
    "Tensor.bmm": "y.numel() x A.shape[-1]", "F.linear": "y.numel() x in_features (no bias)",
    "torch.einsum": "two operands: the product of every label's size", "F.scaled_dot_product_attention":
    "QK^T and AV: y.numel() / Ev x S x (Eq + Ev)",
}


def _u_rule(row: ModuleRow) -> tuple[str, object] | None:
    """(class, rule) of the first class in the module's MRO with a rule; None when none has one."""
    for cls in (row.attrs.get("class", ""), *row.attrs.get("bases", ())):
        if cls in U_RULES:
            return cls, U_RULES[cls]
    return None


class UltralyticsThopConvention(Convention):
    tool = "ultralytics-thop"
    unit = "MACs"
    metric = "ops"
    headline_metric = "macs"
    metrics = {"macs": "ops", "params": "params"}
    rules = (
        RuleDoc("unit", "MACs (multiplications only); bias adds never counted"),
        RuleDoc("matching", "forward hooks on every module; the rule of the first class in its MRO (subclasses counted)"),
        *(RuleDoc(name, (fn.__doc__ or "").split(": ", 1)[-1]) for name, fn in (
            ("Conv", _u_conv), ("ConvTranspose", _u_convt), ("norms", _u_norm), ("PReLU", _u_prelu),
            ("Softmax family", _u_softmax), ("AvgPool", _u_avgpool), ("AdaptiveAvgPool", _u_adaptive_avg),
            ("Linear", _u_linear), ("Bilinear", _u_bilinear), ("Upsample", _u_upsample),
            ("MultiheadAttention", _u_mha), ("RNN / GRU / LSTM", _u_rnn), ("cells", _u_rnn_cell))),
        RuleDoc("zero", "ReLU/ReLU6/LeakyReLU, max pools, pads, dropout, containers, Identity, Flatten, PixelShuffle, "
                "Embedding: 0; GELU, SiLU, Sigmoid, ...: no rule (0)"),
        RuleDoc("functional products", "torch.matmul / Tensor.matmul / @ / bmm, F.linear, two-operand einsum, SDPA: "
                "their MACs, in the total only, when no module with a rule of its own is running"),
        RuleDoc("params", "model.parameters(): every tensor once"),
        RuleDoc("repeated modules", "ops summed over calls"),
    )

    def predict(self, native: NativeCount) -> Prediction:
        tree = common.Tree(native)
        names = frozenset(n for p in native.params for n in (p.name, *p.aliases))
        counting = {r.name for r in native.rows if (_u_rule(r) or (None, None))[1] is not None}
        layers: list[LayerPrediction] = []
        unattributed: dict[str, int] = {}
        u_terms: dict[str, list[Term]] = {}
        for row in native.rows:
            hidden = any(n in counting for n in _ancestors(row.name))  # inside a module with a rule: depth > 0
            seen: list[tuple[str, int, int, int]] = []  # (label, count, macs, flops)
            if not hidden:
                for call in row.torch_calls:
                    if call.func in U_FUNCTIONAL:
                        count = _u_functional(call)
                        seen.append((call.func, count, call.components.get("macs", 0), _flops(call.components)))
            for label, count, macs, _ in seen:
                # ``a @ b`` reaches a TorchFunctionMode as Tensor.matmul: the tool's key for both
                key = f"functional:{'Tensor.matmul' if label == 'Tensor.__matmul__' else label}"
                unattributed[key] = unattributed.get(key, 0) + count
                ts = u_terms.setdefault(key, [])
                ts.append(Term("functional_not_seen", macs, "ultralytics_thop.functional_not_seen",
                               Phrase("{label!s} in {type!s} ({v!s}) counted "
                               "in the total only: {macs} MACs", {"label": label, "type": row.type,
                                                                  "v": row.name or 'root', "macs": macs})))
                if count != macs:
                    ts.append(Term("formula", count - macs, "ultralytics_thop.formula.3",
                                   Phrase("its {label!s} rule gives {count} where the MAC "
                                   "count is {macs}", {"label": label, "count": count, "macs": macs})))
            pred = self._row(tree, row, seen, names)
            if pred is not None:
                layers.append(pred)
        ops = sum(p.predicted["ops"] for p in layers) + sum(unattributed.values())
        params = sum(p.numel for p in native.params)
        return Prediction(self.tool, self.metric, self.unit, tuple(layers), headline={"macs": ops, "params": params},
                          unattributed={k: v for k, v in unattributed.items() if v},
                          unattributed_terms={k: tuple(v) for k, v in u_terms.items() if unattributed.get(k)},
                          headline_reference={"macs": ops, "params": sum(p.predicted["params"] for p in layers)})

    def _row(self, tree: common.Tree, row: ModuleRow, seen: list[tuple[str, int, int, int]],
             names: frozenset[str]) -> LayerPrediction | None:
        found = _u_rule(row)
        rule = found[1] if found else None
        ref = row.macs  # rows are exclusive: a module's own count
        terms: list[Term] = []
        ops = 0
        if rule is not None:
            parts: dict[str, int] = {}
            attrs = {**row.attrs, "has_bias_k": f"{row.name}.bias_k".lstrip(".") in names}
            for c in row.call_records:
                for k, v in rule(attrs, c).items():
                    parts[k] = parts.get(k, 0) + v
            ops = sum(parts.values())
            for cause, amount in parts.items():
                if cause != "macs" and amount:
                    terms.append(Term(cause, amount, "ultralytics_thop.hook_extra",
                                      Phrase("ultralytics-thop counts {type!s}'s {replace!s}: "
                                      "{amount} ({rstrip!s})", {"type": row.type, "replace": cause.replace('_', ' '),
                                                                "amount": amount,
                                                                "rstrip": (rule.__doc__ or '').split(': ', 1)[-1].rstrip('.')})))
            rest = parts.get("macs", 0) - ref
            if rest:
                terms.append(Term("formula", rest, "ultralytics_thop.formula",
                                  Phrase("ultralytics-thop's {type!s} formula gives "
                                  "{get} MACs where the MAC count is {ref}", {"type": row.type,
                                                                              "get": parts.get('macs', 0),
                                                                              "ref": ref})))
        else:
            seen_macs = sum(m for _, _, m, _ in seen)
            seen_flops = sum(f for _, _, _, f in seen)
            if seen_macs:
                labels = ", ".join(sorted({lbl for lbl, *_ in seen}))
                terms.append(Term("functional_not_seen", -seen_macs, "ultralytics_thop.functional_not_seen.2",
                                  Phrase("{type!s} has no rule: its {labels!s} "
                                  "({seen_macs} MACs) are counted in the total only", {"type": row.type,
                                                                                       "labels": labels,
                                                                                       "seen_macs": seen_macs})))
            missed, missed_flops = ref - seen_macs, row.flops - seen_flops
            if missed or (missed_flops and not found):
                cause = "unsupported_module" if common._builtin_compute(row) else "functional_not_seen"
                what = (f"ultralytics-thop has no rule for {row.type}" if cause == "unsupported_module" else
                        f"ultralytics-thop counts no product of {row.type}.forward but matmul / linear / einsum / SDPA")
                terms.append(Term(cause, -missed, "ultralytics_thop.missed",
                                  Phrase("{what!s}: {missed} MACs ({missed_flops} FLOPs) "
                                  "not counted", {"what": what, "missed": missed, "missed_flops": missed_flops}),
                                  flops=-missed_flops))
        leaf = not tree.children.get(row.name)
        if not (leaf or ops or row.params or terms or ref):
            return None
        return LayerPrediction(row.name, row.type, row.calls, {"ops": ref, "params": row.params},
                               {"ops": ops, "params": row.params}, {"ops": tuple(terms)} if terms else {})


def _ancestors(name: str) -> list[str]:
    """The module and every module above it, root included."""
    out = [name]
    while name:
        name = name.rsplit(".", 1)[0] if "." in name else ""
        out.append(name)
    return out


def _flops(components: dict) -> int:
    from reconcile.counter.formulas import flops_of

    return flops_of(dict(components))


def _u_functional(call) -> int:
    """What ultralytics-thop's functional hook counts for one recorded call."""
    from reconcile.records import TensorMeta

    tensors = [a for a in call.args if isinstance(a, TensorMeta)]
    kw = dict(call.kwargs)
    if call.func == "F.scaled_dot_product_attention":
        q, k, v = (tensors + [kw.get(n) for n in ("query", "key", "value")][len(tensors):])[:3]
        out = (*q.shape[:-1], v.shape[-1])
        return numel(out) // v.shape[-1] * k.shape[-2] * (q.shape[-1] + v.shape[-1])
    if call.func == "torch.einsum":
        # two operands: the product of every label's size, which is the native MAC count of the
        # contraction; more operands (or a list the record does not hold): 0
        return call.components.get("macs", 0) if len(tensors) == 2 else 0
    first = tensors[0] if tensors else kw.get("input")
    if call.func == "F.linear":
        w = tensors[1] if len(tensors) > 1 else kw.get("weight")
        return numel(first.shape[:-1]) * w.shape[0] * first.shape[-1]
    other = tensors[1] if len(tensors) > 1 else kw.get("other") or kw.get("mat2")
    a, b = first.shape, other.shape
    if len(b) == 1:
        out = a[:-1]
    elif len(a) == 1:
        out = (*b[:-2], b[-1])
    else:
        batch = _broadcast(a[:-2], b[:-2])
        out = (*batch, a[-2], b[-1])
    return numel(out) * a[-1]


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    return tuple(max(x, y) for x, y in zip(a, b))


ULTRALYTICS = UltralyticsThopConvention()
