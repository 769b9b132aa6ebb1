"""torchprofile 0.1.0: its rules, written once, predicting ``profile_macs`` per module.

Rows (as the torchprofile adapter reports them): every module, **exclusive** (the traced nodes
its own ``forward`` ran), ``macs`` only; torchprofile has no parameter count.

torchprofile traces with ``torch.jit._get_trace_graph``, like fvcore, and applies one handler per
traced op (``handlers.HANDLER_MAP``, read from its source):

* conv (``aten::_convolution``), ``addmm``, ``addmv``, ``bmm``, ``baddbmm``, ``linear`` /
  ``matmul``, ``einsum``, ``scaled_dot_product_attention`` (QK and AV), ``lstm``: the MACs
  (bias never counted), which is native's ``macs`` of the same work;
* ``batch_norm`` / ``instance_norm`` / ``layer_norm`` / ``group_norm``: 1 per element when a
  weight is passed (affine), else 0 (native: 0 MACs);
* ``mean``, ``avg_pool{1,2,3}d``, ``adaptive_avg_pool{1,2,3}d``: 1 per *output* element;
* ``mul`` / ``mul_``: 1 per output element; ``leaky_relu`` 1 per element;
  ``upsample_bilinear2d`` 4 and ``grid_sampler`` 4 (bilinear) per output element;
* everything else 0: add, relu, gelu, softmax, max-pool, ... silently (``_ZERO_COST_OPS``), other
  ops with a "No handlers found" warning (``_convolution_mode``, ``gru``, ``rms_norm``,
  ``_grouped_mm`` (a mixture of experts' expert products), ...).

Which traced ops a module's own forward holds is fvcore's trace model
(``reconcile.conventions.fvcore_ops.traced_work``, written once there): the same
``_get_trace_graph`` on the same forward. On top of native's eager ops the trace holds Python
arithmetic on sizes as 0-dim tensor nodes: each size ``aten::mul`` costs torchprofile 1 MAC
(``prod([]) == 1``). Their count is the traced ``aten::mul`` calls fvcore's model predicts (with
reconcile's own trace, ``NativeCount.traced``, when the pipeline made one: ``Tool.traced``) minus
the eager multiplies the trace keeps as ``aten::mul``; without the trace record, only
MultiheadAttention's size multiplies are known and the rest is a residual. A module whose result
nothing returned uses is not in the trace: 0 (``dead_code``).

``F.rms_norm`` (timm's RmsNorm, torch's ``nn.RMSNorm``) is one traced ``aten::rms_norm``
node, which has no handler: 0. Eager CPU runs its decomposition (pow, mean, add, rsqrt, mul, and a
mul by the weight), so native's row holds a mean and multiplies that are not traced nodes: the
recorded ``F.rms_norm`` calls (an ``nn.RMSNorm``'s own calls and attributes) say how many
elements to take out.

A transposed conv (an ``nn.ConvTranspose`` module) is costed by torchprofile's ``_convolution``
as a convolution: output elements x channels x kernel, the channels Cin (or Cout / groups when
Cout == Cin), where native counts each input element against Cout / groups outputs per kernel
position (``formula``).

Known limits (each a residual, nothing hidden): a functional ``conv_transpose`` in a parent's
forward (predicted as native's MACs); an ``einsum`` with ``...``
is 0 in torchprofile; ``grid_sample`` in nearest or bicubic mode (assumed bilinear).
"""

from __future__ import annotations

from reconcile.conventions import common
from reconcile.conventions.base import Convention, LayerPrediction, Prediction, RuleDoc, Term, call_arg, numel
from reconcile.conventions.fvcore import trace_only
from reconcile.conventions.fvcore_ops import traced_work
from reconcile.counter.formulas import POOL_MEAN, flops_of
from reconcile.records import ModuleRow, NativeCount, Phrase, TensorMeta

TOOL = "torchprofile"

_NORMS = {"aten::native_batch_norm": "batch_norm", "aten::_native_batch_norm_legit": "batch_norm",
          "aten::_native_batch_norm_legit_no_training": "batch_norm", "aten::native_layer_norm": "layer_norm",
          "aten::native_group_norm": "group_norm"}
_POOLS = {POOL_MEAN: "adaptive_avg_pool (a 1x1 pool, native's keepdim mean)",
          "aten::_adaptive_avg_pool1d": "adaptive_avg_pool1d", "aten::_adaptive_avg_pool2d": "adaptive_avg_pool2d",
          "aten::_adaptive_avg_pool3d": "adaptive_avg_pool3d", "aten::adaptive_avg_pool1d": "adaptive_avg_pool1d",
          "aten::avg_pool1d": "avg_pool1d", "aten::avg_pool2d": "avg_pool2d", "aten::avg_pool3d": "avg_pool3d"}
_MULS = ("aten::mul", "aten::mul_")
_INTERPOLATE = {"aten::upsample_bilinear2d": 4, "aten::grid_sampler_2d": 4}
_INSTANCE_NORM = "torch.nn.modules.instancenorm._InstanceNorm"
_CONV = tuple(f"torch.nn.modules.conv.Conv{d}d" for d in (1, 2, 3))
_CONV_T = tuple(f"torch.nn.modules.conv.ConvTranspose{d}d" for d in (1, 2, 3))
# traced ops without a torchprofile handler for native work that has MACs: counted as 0
_NO_HANDLER = ("aten::_convolution_mode", "aten::gru", "aten::rnn_tanh", "aten::rnn_relu",
               "aten::_grouped_mm")  # transformers' mixture-of-experts: the experts' matrix products


def _isa(row: ModuleRow, cls: str) -> bool:
    return row.attrs.get("class") == cls or cls in row.attrs.get("bases", ())


def _out(row: ModuleRow, op: str) -> int:
    return row.op_elements.get(op, (0, 0))[1]


def _affine_elements(row: ModuleRow, op: str, n: int) -> int:
    """The elements of ``op``'s ``n`` that torchprofile counts: those of calls passed a weight
    (it reads ``inputs[1]`` / ``inputs[2]``). A batch norm whose ``F.batch_norm`` calls were all
    recorded: each call's own weight argument (timm's StdConv2d standardises its conv weight with
    ``weight=None`` inside the conv's forward). Else a norm module's own weight; a functional norm
    in a parent's forward is assumed to get one."""
    if _NORMS[op] == "batch_norm":
        recorded = [c for c in row.torch_calls if c.func == "F.batch_norm"]
        inputs = [call_arg(c, 0, "input") for c in recorded]
        if recorded and all(isinstance(x, TensorMeta) for x in inputs) and sum(numel(x.shape) for x in inputs) == n:
            return sum(numel(x.shape) for c, x in zip(recorded, inputs) if call_arg(c, 3, "weight") is not None)
    if "has_weight" in row.attrs:
        return n if row.attrs["has_weight"] else 0
    return n


def _sdpa_mul_elements(row: ModuleRow, calls: int, mul_calls: int, mul_out: int) -> int:
    """Output elements of the two multiplies (q and k scaled) native's math SDPA runs per call:
    inside the one traced ``scaled_dot_product_attention`` node, so not a traced ``aten::mul``.
    From the recorded calls' q and k shapes when they are all there, else pro rata."""
    recorded = [c for c in row.torch_calls if c.func == "F.scaled_dot_product_attention"]
    if len(recorded) == calls and all(isinstance(a, TensorMeta) for c in recorded for a in c.args[:2]):
        # k is scaled after it is broadcast to q's heads (grouped-query attention: fewer k heads)
        return sum(numel(c.args[0].shape) + numel((*c.args[0].shape[:-2], *c.args[1].shape[-2:])) for c in recorded)
    return mul_out * min(2 * calls, mul_calls) // mul_calls if mul_calls else 0


def _own(row: ModuleRow, fv_muls: int) -> tuple[int, int, list[Term]]:
    """(torchprofile's count, native MACs, terms) for the live module ``row``'s own forward.
    ``fv_muls``: traced ``aten::mul`` nodes fvcore's trace model puts in it."""
    terms: list[Term] = []
    tp = 0
    ref = 0
    sdpa = row.ops.get("aten::_safe_softmax", 0)
    rms_mean, rms_mul, rms_mul_calls = common.rms_norm_parts(row)
    fv_muls -= rms_mul_calls  # fvcore's model takes native's multiplies for traced ones
    traced_ops = {w.op for w in traced_work(row)}
    real_muls = 0
    for op, calls in row.ops.items():
        comps = row.op_components.get(op, {})
        macs = comps.get("macs", 0)
        ref += macs
        if macs:
            no_handler = next((t for t in _NO_HANDLER if t in traced_ops and _maps_to(row, op, t)), None)
            if no_handler:
                terms.append(Term("unsupported_op", -macs, "torchprofile.unsupported_op",
                                  Phrase("torchprofile has no handler for {op!s} ({calls} calls): counted as 0, "
                                         "leaving out {macs} MACs", {"op": no_handler, "calls": calls, "macs": macs}),
                                  flops=-flops_of(comps)))
            else:
                tp += macs
        if op in _NORMS:
            n = row.op_elements.get(op, (0, 0))[0]
            traced = "instance_norm" if _isa(row, _INSTANCE_NORM) else _NORMS[op]
            n = _affine_elements(row, op, n)
            if n:
                tp += n
                terms.append(Term("norm", n, "torchprofile.norm", Phrase("torchprofile counts an affine {norm!s} at 1 MAC "
                                                                    "per element: 1 x {n}", {"norm": traced, "n": n})))
        elif op in _POOLS or op == "aten::mean":
            n = _out(row, op) - (rms_mean if op == "aten::mean" else 0)
            if n:
                tp += n
                if op in _POOLS:
                    terms.append(Term("pool", n, "torchprofile.pool", Phrase("torchprofile counts {pool!s} at 1 MAC per "
                                                                        "output element: 1 x {n}",
                                                                        {"pool": _POOLS[op], "n": n})))
                else:
                    terms.append(Term("formula", n, "torchprofile.formula", Phrase("torchprofile's aten::mean handler counts "
                                                                              "1 MAC per output element: 1 x {n}",
                                                                              {"n": n})))
        elif op in _MULS:
            n = _out(row, op)
            inner = _sdpa_mul_elements(row, sdpa, calls, n) if sdpa and op == "aten::mul" else 0
            kept = calls - (min(2 * sdpa, calls) if op == "aten::mul" else 0)
            if op == "aten::mul":  # those of F.rms_norm are inside one traced node
                n, kept = n - rms_mul, kept - rms_mul_calls
            real_muls += kept
            if n - inner:
                tp += n - inner
                terms.append(Term("elementwise", n - inner, "torchprofile.elementwise",
                                  Phrase("torchprofile counts {op!s} at 1 MAC per output element: 1 x {n} "
                                         "({calls} calls)", {"op": op, "n": n - inner, "calls": kept})))
        elif op == "aten::leaky_relu":
            n = _out(row, op)
            tp += n
            terms.append(Term("activation", n, "torchprofile.activation",
                              Phrase("torchprofile counts leaky_relu at 1 MAC per element: 1 x {n}", {"n": n})))
        elif op in _INTERPOLATE:
            n = _out(row, op)
            per = _INTERPOLATE[op]
            tp += per * n
            terms.append(Term("interpolate", per * n, "torchprofile.interpolate",
                              Phrase("torchprofile counts {op!s} at {per!s} MACs per output element: {per!s} x {n}",
                                     {"op": op.removeprefix("aten::"), "per": per, "n": n})))
    if row.attrs.get("class", "") in _CONV_T and "aten::convolution" in row.op_components:
        got = sum(_transposed_conv(row, call) for call in row.call_records)
        exact = row.op_components["aten::convolution"].get("macs", 0)
        if got != exact:
            tp += got - exact
            terms.append(Term("formula", got - exact, "torchprofile.conv_transposed",
                              Phrase("torchprofile costs {type!s} as a convolution: output elements x {cin} input "
                                     "channels x kernel = {got}, where each of the input's elements meets {cout} "
                                     "outputs per kernel position: {exact}",
                                     {"type": row.type, "cin": _transposed_channels(row), "got": got,
                                      "cout": row.attrs["out_channels"] // row.attrs["groups"], "exact": exact})))
    size_muls = fv_muls - real_muls
    if size_muls > 0:
        tp += size_muls
        terms.append(Term("trace_size_arithmetic", size_muls, "torchprofile.trace_size_arithmetic",
                          Phrase("the jit trace records Python arithmetic on sizes as {n} aten::mul node(s) on "
                                 "0-dim tensors here, each 1 MAC to torchprofile (no eager op runs for them)",
                                 {"n": size_muls})))
    return tp, ref, terms


def _transposed_channels(row: ModuleRow) -> int:
    """The channels torchprofile's ``_convolution`` multiplies by for a transposed conv: its
    weight is (Cin, Cout / groups, *kernel), and the handler reads it as a convolution's
    (Cout, Cin / groups, ...) when the output's channels equal the weight's first dim (Cout == Cin:
    Cout / groups), else takes that first dim (Cin)."""
    a = row.attrs
    return a["out_channels"] // a["groups"] if a["out_channels"] == a["in_channels"] else a["in_channels"]


def _transposed_conv(row: ModuleRow, call) -> int:
    """torchprofile's count for one call of a transposed conv: output elements x channels x kernel."""
    return numel(call.outputs[0].shape) * _transposed_channels(row) * numel(row.attrs["kernel_size"])


def _maps_to(row: ModuleRow, op: str, traced: str) -> bool:
    """The native MAC op ``op`` is the work behind the handler-less traced op ``traced``."""
    if traced == "aten::_convolution_mode":
        return op in ("aten::convolution", "aten::conv1d", "aten::conv2d", "aten::conv3d")
    if traced == "aten::_grouped_mm":
        return op == traced
    return op.startswith("module::")  # a recurrent layer: its work as one module op


class TorchprofileConvention(Convention):
    tool = TOOL
    unit = "MACs"
    metric = "macs"
    headline_metric = "macs"
    metrics = {"macs": "macs"}
    op_metrics = ("macs",)
    rules = (
        RuleDoc("unit", "MACs only (profile_macs); no parameter count"),
        RuleDoc("mechanism", "torch.jit._get_trace_graph; one handler per traced op; rows: the nodes each module's own "
                "forward ran (scopes pushed by reconcile's adapter: torchprofile records none)"),
        RuleDoc("conv / addmm / bmm / baddbmm / linear / matmul / einsum / SDPA / lstm", "the MACs, bias never counted"),
        RuleDoc("batch_norm / instance_norm / layer_norm / group_norm", "1 per element if a weight is passed, else 0"),
        RuleDoc("mean / avg_pool / adaptive_avg_pool", "1 per output element"),
        RuleDoc("mul / mul_", "1 per output element; a size multiply traced on 0-dim tensors (MultiheadAttention's "
                "bsz * num_heads) 1 each"),
        RuleDoc("leaky_relu / upsample_bilinear2d / grid_sampler", "1 / 4 / 4 (bilinear) per output element"),
        RuleDoc("zero", "add, relu, gelu, silu, softmax, max_pool, sub, div, sum, upsample_nearest2d, ... "
                "(_ZERO_COST_OPS); any other op warns \"No handlers found\" and counts 0 (_convolution_mode, gru, rms_norm, _grouped_mm)"),
        RuleDoc("dead code", "a module whose result nothing returned uses is not in the trace: 0"),
        RuleDoc("kwargs", "positional tensor inputs only (kwargs raise ValueError)"),
    )

    def predict(self, native: NativeCount) -> Prediction:
        layers = [self._row(native, r) for r in native.rows]
        total = sum(p.predicted["macs"] for p in layers)
        return Prediction(self.tool, self.metric, self.unit, tuple(layers), headline={"macs": total},
                          headline_reference={"macs": total})

    def _row(self, native: NativeCount, row: ModuleRow) -> LayerPrediction:
        ref = row.macs
        if not row.calls:
            return LayerPrediction(row.name, row.type, row.calls, {"macs": ref}, {"macs": 0}, {"macs": ()})
        work = traced_work(row, meta=native.device == "meta")
        if native.traced is not None:
            work = work + trace_only(row.name, work, native.traced)
        if row.call_records and not any(c.used for c in row.call_records):  # fvcore's liveness rule
            terms = (Term("dead_code", -ref, "torchprofile.dead_code",
                          Phrase("nothing the model returns uses {type!s}'s result, so the jit trace drops it: "
                                 "{macs} MACs not counted", {"type": row.type, "macs": ref}),
                          flops=-row.flops),) if ref or row.flops else ()
            return LayerPrediction(row.name, row.type, row.calls, {"macs": ref}, {"macs": 0}, {"macs": terms})
        fv_muls = sum(w.calls for w in work if w.op in _MULS and w.status != "dropped")
        tp, own_ref, terms = _own(row, fv_muls)
        if own_ref != ref:  # every native MAC is in exactly one op of the row
            raise AssertionError(f"{TOOL} convention mapped {own_ref} of {ref} native MACs in {row.name!r}")
        return LayerPrediction(row.name, row.type, row.calls, {"macs": ref}, {"macs": tp}, {"macs": tuple(terms)})


CONVENTION = TorchprofileConvention()
