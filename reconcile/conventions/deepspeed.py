"""DeepSpeed's flops profiler 0.19.8 (``get_model_profile``): its rules, written once, predicting every
row it reports from the native count alone. calflops 0.3.2 and flops-profiler 0.1.2 are copies of
an older version of the same profiler; their conventions are this one with other switches
(``conventions/calflops.py``, ``conventions/flops_profiler.py``).

How the profiler counts (``deepspeed/profiling/flops_profiler/profiler.py``): it patches names in
``torch.nn.functional``, ``torch`` and ``torch.Tensor`` with wrappers that add a formula's
(FLOPs, MACs) to the innermost running module (a pre/post forward hook on *every* module keeps
the stack). So each row is a module's *own* work, summed over its calls, and only work done
through a patched name counts. The native record tells which name ran: for a ``torch.nn``
module its type (its forward is known), for any other forward the recorded Python-level torch
calls (``ModuleRow.torch_calls``). A function a module holds from before the patching
(transformers' activations keep ``F.gelu``: ``attrs["binds"]``) is the original: not counted.

Metrics, per row: ``macs`` (reference: native MACs of the row's own work), ``flops`` (reference:
the same native MACs; 2 per counted MAC is the ``mac_vs_flop`` term, then bias, norm, activation,
pool, softmax, elementwise and interpolation terms) and ``params`` (``module.parameters()`` of the
subtree: reference the native parameters the subtree owns). The total's params is the root's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reconcile.conventions import common
from reconcile.conventions.base import Convention, LayerPrediction, Number, Prediction, RuleDoc, Term, call_arg, numel
from reconcile.counter.formulas import flops_of
from reconcile.records import ModuleRow, NativeCount, Phrase, TensorMeta, TorchCall, Value

_NN = "torch.nn.modules."


def _term(tool: str, cause: str, amount: Number, template: str, values: dict[str, Value] | None = None,
          rule: str | None = None, flops: Number = 0, macs: Number | None = None) -> Term:
    """A term of ``tool`` (deepspeed, calflops or flops-profiler): rule ``<tool>.<rule or cause>``, and
    its sentence ``template`` with the slot ``{tool!s}`` and ``values`` filled when rendering."""
    values = dict(values or {})
    assert "tool" not in values, values
    return Term(cause, amount, f"{tool}.{rule or cause}", Phrase(template, {"tool": tool, **values}), flops, macs)


def _cls(row: ModuleRow) -> str:
    cls = row.attrs.get("class", "")
    return cls.rsplit(".", 1)[-1] if cls.startswith(_NN) else ""


def _builtin(row: ModuleRow) -> bool:
    """A torch.nn module: its forward is known, and the native record keeps no Python calls for it."""
    cls = row.attrs.get("class", "")
    return cls.startswith(_NN) and not cls.startswith(_NN + "container.")


@dataclass
class _Acc:
    """One row's prediction being built: counted MACs, and terms for macs and for flops."""

    tool: str
    counted: int = 0  # MACs the tool counts on this row
    macs_terms: list[Term] = field(default_factory=list)
    flops_terms: list[Term] = field(default_factory=list)

    def term(self, cause: str, amount: Number, template: str, values: dict[str, Value] | None = None,
             rule: str | None = None, flops: Number = 0, macs: Number | None = None) -> Term:
        return _term(self.tool, cause, amount, template, values, rule, flops, macs)

    def count(self, macs: int, native_macs: int, what: str, values: dict[str, Value] | None = None,
              rule: str = "formula") -> None:
        """Work the tool counts as ``macs`` MACs where the native count has ``native_macs``; ``what``
        (a template filled from ``values``) names the work and the tool's formula."""
        self.counted += macs
        if macs != native_macs:
            t = self.term("formula", macs - native_macs, "{tool!s} counts {what} as {macs} MACs where the MAC "
                          "count is {native_macs}", {"what": Phrase(what, dict(values or {})), "macs": macs,
                                                     "native_macs": native_macs}, rule)
            self.macs_terms.append(t)
            self.flops_terms.append(t)

    def extra(self, cause: str, amount: int, template: str, values: dict[str, Value] | None = None,
              rule: str | None = None) -> None:
        """FLOPs the tool counts beyond 2 per MAC (bias, norm, activation...): "<tool>: " + ``template``."""
        if amount:
            self.flops_terms.append(self.term(cause, amount, "{tool!s}: " + template, values, rule))

    def miss(self, cause: str, components: dict[str, int], template: str, values: dict[str, Value] | None = None,
             rule: str | None = None) -> None:
        """Native work the tool does not count at all: "<tool> " + ``template`` + what is lost."""
        macs = components.get("macs", 0)
        flops = flops_of(components)
        if macs or flops:
            values = dict(values or {})
            assert not {"lost_macs", "lost_flops"} & set(values), values
            t = self.term(cause, -macs, "{tool!s} " + template + ": {lost_macs} MACs, {lost_flops} FLOPs not counted",
                          {**values, "lost_macs": macs, "lost_flops": flops}, rule, flops=-flops, macs=-macs)
            if macs:
                self.macs_terms.append(t)
            self.flops_terms.append(t)


# RNN type -> (gates G, gate operations per hidden unit in DeepSpeed's _rnn_flops)
_RNN_GATES = {"RNN": (1, 1), "RNNCell": (1, 1), "GRU": (3, 7), "GRUCell": (3, 7), "LSTM": (4, 10), "LSTMCell": (4, 10)}


def _einsum_flops(call: TorchCall) -> int | None:
    """numpy's ``einsum_path(..., optimize='optimal')`` "Optimized FLOP count" for one or two
    operands: the product of every index size x (1, + 1 when an index is summed away), plus 1 (numpy's
    ``opt_cost = sum(cost_list) + 1``), which the
    profiler reads back from the text ``%.3e``; None for anything else (ellipsis, 3+ operands)."""
    eq = call.args[0] if call.args and isinstance(call.args[0], str) else None
    shapes = [a.shape for a in call.args[1:] if isinstance(a, TensorMeta)]
    if eq is None or "..." in eq or not 1 <= len(shapes) <= 2 or len(shapes) != len(call.args) - 1:
        return None
    eq = eq.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        return None
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, shapes):
        if len(term) != len(shape):
            return None
        for ch, d in zip(term, shape):
            sizes[ch] = max(sizes.get(ch, 1), d)
    if "->" not in eq:
        rhs = "".join(sorted(ch for ch in sizes if lhs.count(ch) == 1))
    removed = set(sizes) - set(rhs)
    cost = numel(tuple(sizes.values())) * (max(1, len(shapes) - 1) + (1 if removed else 0))
    return int(float("%.3e" % (cost + 1)))  # numpy: opt_cost = sum(cost_list) + 1


def _shape(a: Any) -> tuple[int, ...] | None:
    return a.shape if isinstance(a, TensorMeta) else None


class DeepspeedConvention(Convention):
    tool = "deepspeed"
    unit = "MACs"
    metric = "macs"
    headline_metric = "macs"
    metrics = {"macs": "macs", "flops": "flops", "params": ""}
    op_metrics = ("macs", "flops")

    # what this version patches (the copies differ only here)
    sdpa = True  # F.scaled_dot_product_attention (QK and AV, no softmax)
    operator_matmul = True  # Tensor.__matmul__ (a @ b)
    mm_bmm = True  # torch.mm / torch.bmm / Tensor.mm / Tensor.bmm
    tensor_baddbmm = False  # Tensor.baddbmm (torch.baddbmm is patched by all three)
    broadcast_left = False  # add/mul sized by dimensions aligned from the left (a bug) instead of broadcasting
    trainable_params_only = False
    interpolate_scaled = True  # F.interpolate with scale_factor: numel x scale^d (calflops: numel)
    warm_up = 1
    rnn_two_per_weight = True  # RNN FLOPs 2|W| - G x hidden per layer and step (flops-profiler: |W|)
    root_hooked = True  # False: the model's forward is called directly (model.forward(...)), so no hook of
    # the root runs and the work of its own forward lands in no module: counted nowhere

    rules = (
        RuleDoc("unit", "MACs and FLOPs, each module's own work (functionals it calls directly), summed over calls; "
                "the total sums every module once"),
        RuleDoc("matching", "patched names in torch.nn.functional, torch and Tensor, attributed to the innermost "
                "running module (hooks on every module); a function captured before patching is not counted"),
        RuleDoc("F.linear", "MACs input.numel() x out_features; FLOPs 2 x MACs (bias never counted)"),
        RuleDoc("F.conv*", "MACs K x Cin x Cout/g per output position; FLOPs 2 x MACs + Cout per position with bias"),
        RuleDoc("torch.matmul, Tensor.matmul, @, mm, bmm", "MACs prod(A.shape) x B.shape[-1]; FLOPs 2 x MACs"),
        RuleDoc("torch.addmm, Tensor.addmm, torch.baddbmm", "MACs prod(mat1) x mat2[-1]; FLOPs 2 x MACs + numel of the "
                "added input (a bias vector counts once per call, not once per row)"),
        RuleDoc("F.scaled_dot_product_attention", "MACs L x S x (E + Ev) per head and batch (QK and AV); FLOPs 2 x MACs; "
                "no softmax or scaling"),
        RuleDoc("F.relu/prelu/elu/leaky_relu/relu6/silu/gelu, F.*pool*, F.softmax", "FLOPs input.numel(); 0 MACs"),
        RuleDoc("F.batch_norm", "FLOPs 2 per element with weight, 1 without (training: 5 / 4)"),
        RuleDoc("F.layer_norm/group_norm/instance_norm", "FLOPs 5 per element with weight, 4 without"),
        RuleDoc("torch.add/mul, Tensor.add/mul", "FLOPs the broadcast shape's elements (a number operand: the tensor's)"),
        RuleDoc("F.interpolate/upsample", "FLOPs prod(size), or numel x scale^(ndim-2)"),
        RuleDoc("not counted", "operators + - * / (only Tensor.__matmul__ is patched), x.softmax(), torch.softmax, "
                "sigmoid/tanh/hardswish/hardtanh (so nn.ReLU6), F.embedding, dropout, RNN MACs (FLOPs only)"),
        RuleDoc("params", "sum(p.numel() for p in module.parameters()) per module (its subtree, each tensor once); "
                "the total is the root's"),
        RuleDoc("run", "get_model_profile(model, args=inputs): one warm-up forward, then the profiled forward"),
    )

    # ----- calls through patched names (a user-written forward) ----------------------------------

    def _patched(self) -> dict[str, str]:
        """Native call label -> the rule family the tool applies."""
        out = {"F.linear": "linear", "F.conv1d": "conv", "F.conv2d": "conv", "F.conv3d": "conv",
               "torch.matmul": "matmul", "Tensor.matmul": "matmul",
               "torch.addmm": "addmm", "Tensor.addmm": "addmm", "torch.baddbmm": "addmm",
               "torch.mul": "elementwise", "Tensor.mul": "elementwise", "torch.add": "elementwise",
               "Tensor.add": "elementwise", "torch.einsum": "einsum", "F.softmax": "numel:softmax", "F.batch_norm": "batch_norm",
               "F.interpolate": "interpolate", "F.upsample": "interpolate"}
        for n in ("relu", "prelu", "elu", "leaky_relu", "relu6", "silu", "gelu"):
            out[f"F.{n}"] = "numel:activation"
        for d in (1, 2, 3):
            for k in ("avg", "max", "adaptive_avg", "adaptive_max"):
                out[f"F.{k}_pool{d}d"] = "numel:pool"
        if self.sdpa:
            out["F.scaled_dot_product_attention"] = "sdpa"
        if self.operator_matmul:
            out["Tensor.__matmul__"] = "matmul"
        if self.mm_bmm:
            out.update({"torch.mm": "matmul", "Tensor.mm": "matmul", "torch.bmm": "matmul", "Tensor.bmm": "matmul"})
        if self.tensor_baddbmm:
            out["Tensor.baddbmm"] = "addmm"
        return out

    def _call(self, acc: _Acc, call: TorchCall, family: str) -> None:
        comps = dict(call.components)
        native_macs = comps.get("macs", 0)
        a0, a1 = _shape(call_arg(call, 0, "input")), _shape(call_arg(call, 1, "other"))
        if family == "linear":
            w = _shape(call_arg(call, 1, "weight"))
            macs = numel(a0) * w[0]
            acc.count(macs, native_macs, "{call!s}", {"call": call.func}, rule="linear")
        elif family == "conv":
            acc.count(native_macs, native_macs, "{call!s}", {"call": call.func}, rule="conv")
            acc.extra("bias", comps.get("bias", 0), "{call!s} bias, 1 per output element", {"call": call.func},
                      rule="conv_bias")
        elif family == "matmul":
            acc.count(numel(a0) * a1[-1], native_macs, "{call!s} as prod(A.shape) x B.shape[-1]",
                      {"call": call.func}, rule="matmul")
        elif family == "addmm":
            bias = _shape(call_arg(call, 0, "input"))
            m1, m2 = _shape(call_arg(call, 1, "mat1")), _shape(call_arg(call, 2, "mat2"))
            acc.count(numel(m1) * m2[-1], native_macs, "{call!s} as prod(mat1) x mat2[-1]", {"call": call.func},
                      rule="addmm")
            acc.extra("bias", numel(bias), "{call!s} adds its input once per call: {n} (shape {shape!s}), not once "
                      "per output row", {"call": call.func, "n": numel(bias), "shape": str(tuple(bias))},
                      rule="addmm_bias")
        elif family == "sdpa":
            q, k = a0, a1
            v = _shape(call_arg(call, 2, "value"))
            macs = numel(q) * k[-2] + numel(q[:-1]) * k[-2] * v[-1]
            acc.count(macs, native_macs, "scaled_dot_product_attention (QK and AV)", rule="sdpa")
            rest = {k_: v_ for k_, v_ in comps.items() if k_ != "macs"}
            acc.miss("unsupported_op", rest, "leaves out SDPA's softmax and scaling", rule="sdpa_softmax")
        elif family.startswith("numel:"):
            cause = family.split(":")[1]
            acc.extra(cause, numel(a0), "{call!s} as 1 per input element: {n}", {"call": call.func, "n": numel(a0)},
                      rule=f"functional_{cause}")
        elif family == "batch_norm":
            weight = call_arg(call, 3, "weight")
            training = call_arg(call, 5, "training")
            per = (5 if weight is not None else 4) if training else (2 if weight is not None else 1)
            acc.extra("norm", per * numel(a0), "{call!s} as {per!s} per element: {per!s} x {n}",
                      {"call": call.func, "per": per, "n": numel(a0)}, rule="functional_batch_norm")
        elif family == "elementwise":
            acc.extra("elementwise", self._elementwise(call), "{call!s} as the size of its operands' shape",
                      {"call": call.func})
        elif family == "einsum":
            flops = _einsum_flops(call)
            if flops is None:  # an equation this rule does not cover: left as a residual, not guessed
                acc.miss("unsupported_op", comps, "counts this einsum by numpy's einsum_path (not covered here)",
                         rule="einsum_uncovered")
                return
            t = acc.term("formula", -native_macs, "{tool!s} counts torch.einsum in FLOPs only (0 MACs)",
                         rule="einsum_macs")
            acc.macs_terms.append(t)
            acc.flops_terms.append(acc.term("formula", flops - native_macs, "{tool!s} costs torch.einsum by numpy's "
                                            "einsum_path, printed with 4 digits and read back: {flops} FLOPs",
                                            {"flops": flops}, rule="einsum_flops"))
        elif family == "interpolate":
            acc.extra("interpolate", self._interpolate(call), "{call!s}", {"call": call.func})

    def _elementwise(self, call: TorchCall) -> int:
        a = _shape(call_arg(call, 0, "input"))
        b = _shape(call_arg(call, 1, "other"))
        if a is None:
            return numel(b) if b is not None else 1
        if b is None:
            return numel(a)
        if self.broadcast_left:
            dims = max(len(a), len(b))
            return numel(tuple(max(a[i] if i < len(a) else 1, b[i] if i < len(b) else 1) for i in range(dims)))
        dims = max(len(a), len(b))
        pa, pb = (1,) * (dims - len(a)) + tuple(a), (1,) * (dims - len(b)) + tuple(b)
        return numel(tuple(max(x, y) for x, y in zip(pa, pb)))

    def _interpolate(self, call: TorchCall) -> int:
        x = _shape(call_arg(call, 0, "input"))
        size = call_arg(call, 1, "size")
        if size is not None:
            return numel(size) if isinstance(size, tuple) else int(size)
        scale = call_arg(call, 2, "scale_factor")
        if not self.interpolate_scaled:
            return numel(x)
        d = len(x) - 2
        if isinstance(scale, tuple):
            f = 1
            for s in scale:
                f *= s
            return int(numel(x) * f)
        return int(numel(x) * scale ** d)

    def _user_row(self, acc: _Acc, row: ModuleRow) -> None:
        patched = self._patched()
        bound = set(row.attrs.get("binds", ()))
        seen_macs: dict[str, int] = {}
        for call in row.torch_calls:
            comps = dict(call.components)
            seen_macs[call.func] = seen_macs.get(call.func, 0) + comps.get("macs", 0)
            family = patched.get(call.func)
            if family is not None and call.func in bound:
                acc.miss("functional_not_seen", comps, "sees no {call!s} called through a reference {type!s} took "
                         "before the profiler patched it", {"call": call.func, "type": row.type}, rule="captured")
            elif family is not None:
                self._call(acc, call, family)
            elif comps.get("macs", 0):
                acc.miss("unsupported_op", comps, "does not patch {call!s}", {"call": call.func})
        left = row.macs - sum(seen_macs.values())
        if left:
            acc.miss("unsupported_op", {"macs": left}, "sees none of the matrix work done outside the torch "
                     "names it patches", rule="unpatched_work")
        # F.layer_norm / F.group_norm in a user forward (timm's norms): not in the native call record,
        # seen as their aten ops; the profiler costs them 5 per element (a weight is assumed)
        for op in ("aten::native_layer_norm", "aten::native_group_norm"):
            n = row.op_elements.get(op, (0, 0))[0]
            acc.extra("norm", 5 * n, "{op!s} as 5 per element: 5 x {n}", {"op": op.split("::")[1], "n": n},
                      rule="aten_norm")

    # ----- torch.nn modules: their forward is known ----------------------------------------------

    def _builtin_row(self, acc: _Acc, row: ModuleRow) -> None:
        cls, a = _cls(row), row.attrs
        if cls in ("Linear", "NonDynamicallyQuantizableLinear", "Bilinear") and cls != "Bilinear":
            for c in row.call_records:
                macs = c.inputs[0].numel * a["out_features"]
                acc.count(macs, c.components.get("macs", 0), "F.linear", rule="linear")
            return
        if cls in ("Conv1d", "Conv2d", "Conv3d"):
            for c in row.call_records:
                acc.count(c.components.get("macs", 0), c.components.get("macs", 0), "{cls!s}", {"cls": cls},
                          rule="conv")
                acc.extra("bias", c.components.get("bias", 0), "{cls!s} bias, 1 per output element", {"cls": cls},
                          rule="conv_bias")
            return
        if cls.startswith("BatchNorm"):
            for c in row.call_records:
                training = a.get("training") or not a.get("track_running_stats", True)
                w = a.get("affine", False)
                per = (5 if w else 4) if training else (2 if w else 1)
                acc.extra("norm", per * c.inputs[0].numel, "{cls!s} as {per!s} per element: {per!s} x {n}",
                          {"cls": cls, "per": per, "n": c.inputs[0].numel}, rule="batch_norm")
            return
        if cls in ("LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"):
            w = a.get("elementwise_affine", a.get("affine", False))
            if cls == "LayerNorm":
                w = a.get("has_weight", w)
            per = 5 if w else 4
            for c in row.call_records:
                acc.extra("norm", per * c.inputs[0].numel, "{cls!s} as {per!s} per element: {per!s} x {n}",
                          {"cls": cls, "per": per, "n": c.inputs[0].numel})
            return
        if cls in ("ReLU", "PReLU", "ELU", "LeakyReLU", "SiLU", "GELU"):
            for c in row.call_records:
                acc.extra("activation", c.inputs[0].numel, "{cls!s} as 1 per element: {n}",
                          {"cls": cls, "n": c.inputs[0].numel})
            return
        if any(cls.startswith(p) for p in ("MaxPool", "AvgPool", "AdaptiveAvgPool", "AdaptiveMaxPool")):
            for c in row.call_records:
                acc.extra("pool", c.inputs[0].numel, "{cls!s} as 1 per input element: {n}",
                          {"cls": cls, "n": c.inputs[0].numel})
            return
        if cls == "Softmax":
            for c in row.call_records:
                acc.extra("softmax", c.inputs[0].numel, "Softmax as 1 per element: {n}", {"n": c.inputs[0].numel})
            return
        if cls == "MultiheadAttention":
            self._mha(acc, row)
            return
        if cls in _RNN_GATES:
            self._rnn(acc, row, cls)
            return
        # anything else (Embedding, Dropout, Identity, Flatten, Sigmoid, Hardswish, ReLU6 through
        # F.hardtanh, ...): no patched name in its forward
        acc.miss("unsupported_module", dict(row.components), "has no patched function in {type!s}.forward",
                 {"type": row.type})

    def _rnn(self, acc: _Acc, row: ModuleRow, cls: str) -> None:
        """The module hook ``_rnn_forward_hook`` (``_rnn_cell_forward_hook``): FLOPs only, per layer
        2|W_ih| - G h + 2|W_hh| - G h + gate ops (+ |b_ih| + |b_hh|), the forward direction's weights,
        x input.shape[0] x input.shape[1] (cells: x input.shape[0]), x2 bidirectional; 0 MACs."""
        a = row.attrs
        g, gate_ops = _RNN_GATES[cls]
        h = a["hidden_size"]
        cell = cls.endswith("Cell")
        layers = 1 if cell else a["num_layers"]
        dirs = 2 if a.get("bidirectional") else 1
        out_h = a.get("proj_size") or h
        weights = minus = gates = bias = 0
        for i in range(layers):
            in_i = a["input_size"] if i == 0 else out_h * dirs
            weights += g * h * in_i + g * h * out_h
            minus += 2 * g * h
            gates += gate_ops * h
            bias += 2 * g * h if a.get("bias", True) else 0
        units = sum((c.inputs[0].shape[0] if cell else c.inputs[0].shape[0] * c.inputs[0].shape[1])
                    for c in row.call_records) * (1 if cell else dirs)
        native = row.macs
        acc.macs_terms.append(acc.term("formula", -native, "{tool!s} counts {cls!s} in FLOPs only (0 MACs)",
                                       {"cls": cls}, rule="rnn_macs"))
        k = 2 if self.rnn_two_per_weight else 1
        if k == 2:
            acc.flops_terms.append(acc.term("mac_vs_flop", native, "{tool!s} counts {cls!s}'s weights at 2 per MAC",
                                            {"cls": cls}, rule="rnn_mac_vs_flop"))
        diff = k * weights * units - k * native
        if diff:
            acc.flops_terms.append(acc.term("formula", diff, "{tool!s} costs {cls!s} from the forward direction's "
                                            "weights per step: {k!s} x {weights} x {units}",
                                            {"cls": cls, "k": k, "weights": weights, "units": units},
                                            rule="rnn_weights"))
        if k == 2:
            acc.flops_terms.append(acc.term("per_output_minus_one", -minus * units, "{tool!s}: 2|W| - G x hidden per "
                                            "product: -{minus} x {units}", {"minus": minus, "units": units},
                                            rule="rnn_minus"))
        acc.extra("rnn_gates", gates * units, "{cls!s} gate operations {gate_ops!s} x hidden per step: {n}",
                  {"cls": cls, "gate_ops": gate_ops, "n": gates * units})
        acc.extra("bias", bias * units, "{cls!s} |b_ih| + |b_hh| per step: {n}", {"cls": cls, "n": bias * units},
                  rule="rnn_bias")

    def _mha(self, acc: _Acc, row: ModuleRow) -> None:
        """F.multi_head_attention_forward (grad enabled: not the fused path) calls the patched
        ``linear`` and ``scaled_dot_product_attention`` through torch.nn.functional's globals."""
        a = row.attrs
        for c in row.call_records:
            q, k, v = (c.inputs[i].shape for i in range(3))
            bf = a.get("batch_first", False)
            b, lq, lk, lv = (q[0], q[1], k[1], v[1]) if bf else (q[1], q[0], k[0], v[0])
            e = q[-1]
            kd, vd = k[-1], v[-1]
            proj = b * (lq * e * e + lk * kd * e + lv * vd * e) + b * lq * e * e  # in-projections, out-projection
            native = c.components.get("macs", 0)
            acc.count(proj, proj, "MultiheadAttention's projections (F.linear)", rule="mha_linear")
            attn = native - proj
            if self.sdpa:
                acc.count(attn, attn, "MultiheadAttention's scaled_dot_product_attention", rule="mha_sdpa")
            else:
                acc.miss("unsupported_op", {"macs": attn, "softmax": c.components.get("softmax", 0)},
                         "does not patch F.scaled_dot_product_attention (inside MultiheadAttention)", rule="mha_sdpa")

    # ----- rows and totals -------------------------------------------------------------------------

    def _params(self, native: NativeCount, row: ModuleRow, tree: common.Tree) -> tuple[int, tuple[Term, ...]]:
        prefix = row.name + "." if row.name else ""
        registered = [p for p in native.params if any(n.startswith(prefix) for n in (p.name, *p.aliases))]
        counted = sum(p.numel for p in registered if p.trainable or not self.trainable_params_only)
        terms = []
        frozen = sum(p.numel for p in registered if p.name.startswith(prefix) and not p.trainable)
        if frozen and self.trainable_params_only:
            terms.append(_term(self.tool, "params_frozen", -frozen, "{tool!s} counts only requires_grad parameters: "
                               "{frozen} frozen ones of {type!s} left out", {"frozen": frozen, "type": row.type}))
        borrowed = sum(p.numel for p in registered if not p.name.startswith(prefix)
                       and (p.trainable or not self.trainable_params_only))
        if borrowed:
            terms.append(_term(self.tool, "params_tied", borrowed, "{tool!s} counts {borrowed} parameters {type!s} "
                               "shares with (registered first under) another module",
                               {"borrowed": borrowed, "type": row.type}))
        return counted, tuple(terms)

    def predict(self, native: NativeCount) -> Prediction:
        tree = common.Tree(native)
        layers = []
        for row in native.rows:
            acc = _Acc(self.tool)
            if row.name == "" and not self.root_hooked:
                acc.miss("functional_not_seen", dict(row.components), "calls model.forward() directly, so the "
                         "root's hooks never run and the work of {type!s}.forward itself lands in no module",
                         {"type": row.type}, rule="root_not_hooked")
            elif _builtin(row):
                self._builtin_row(acc, row)
            else:
                self._user_row(acc, row)
            if acc.counted:
                acc.flops_terms.insert(0, acc.term("mac_vs_flop", acc.counted, "{tool!s} counts 2 FLOPs per MAC: "
                                                   "{counted} MACs", {"counted": acc.counted}))
            ref_params = tree.params(row.name)
            params, p_terms = self._params(native, row, tree)
            ref = {"macs": row.macs, "flops": row.macs, "params": ref_params}
            pred = {k: ref[k] + sum(t.amount for t in ts) for k, ts in
                    (("macs", acc.macs_terms), ("flops", acc.flops_terms), ("params", p_terms))}
            layers.append(LayerPrediction(row.name, row.type, row.calls, ref, pred,
                                          {"macs": tuple(acc.macs_terms), "flops": tuple(acc.flops_terms),
                                           "params": p_terms}))
        macs = sum(p.predicted["macs"] for p in layers)
        flops = sum(p.predicted["flops"] for p in layers)
        root = next(p for p in layers if p.module == "")
        headline = {"macs": macs, "flops": flops, "params": root.predicted["params"]}
        reference = {"macs": macs, "flops": flops, "params": root.reference["params"]}
        return Prediction(self.tool, self.metric, self.unit, tuple(layers), headline=headline,
                          headline_reference=reference, headline_terms={"params": root.terms["params"]})


CONVENTION = DeepspeedConvention()
