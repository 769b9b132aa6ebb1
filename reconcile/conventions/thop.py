"""thop 0.1.1.post2209072238: its rules, written once, predicting ``thop.profile`` per layer.

Rows (as the thop adapter reports them): thop's terminal entries of ``ret_layer_info``: a module
whose *exact* type has a rule (``register_hooks``; ``Sequential`` is recursed into anyway), or a
module with no children. Rows are disjoint; a registered module is atomic. Ops accumulate over
calls; params are ``sum(m.parameters())`` of registered modules that ran at least once.
"""

from __future__ import annotations


from reconcile.conventions.base import (
    Convention, LayerPrediction, Prediction, RuleDoc, Term, n_in, n_out, numel,
)
from reconcile.conventions import common
from reconcile.records import ModuleRow, NativeCount, Phrase

_NN = "torch.nn.modules."


def _types(module: str, *names: str) -> set[str]:
    return {f"{_NN}{module}.{n}" for n in names}


CONV = _types("conv", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d")
NORM = (_types("batchnorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm")
        | _types("normalization", "LayerNorm") | _types("instancenorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"))
ZERO = (_types("padding", "ZeroPad2d") | _types("activation", "ReLU", "ReLU6", "LeakyReLU")
        | _types("pooling", "MaxPool1d", "MaxPool2d", "MaxPool3d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d")
        | _types("dropout", "Dropout") | _types("pixelshuffle", "PixelShuffle") | _types("container", "Sequential"))
AVG = _types("pooling", "AvgPool1d", "AvgPool2d", "AvgPool3d")
ADAPTIVE_AVG = _types("pooling", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d")
UPSAMPLE = _types("upsampling", "Upsample", "UpsamplingBilinear2d", "UpsamplingNearest2d")
LINEAR = _types("linear", "Linear")
PRELU = _types("activation", "PReLU")
SOFTMAX = _types("activation", "Softmax")
RNN = _types("rnn", "RNN", "GRU", "LSTM")
CELL = _types("rnn", "RNNCell", "GRUCell", "LSTMCell")
REGISTERED = CONV | NORM | ZERO | AVG | ADAPTIVE_AVG | UPSAMPLE | LINEAR | PRELU | SOFTMAX | RNN | CELL

_UPSAMPLE_COST = {"nearest": 1, "linear": 5, "bilinear": 11, "bicubic": 259}


def _cell_ops(kind: str, i: int, h: int, bias: bool) -> tuple[int, int, int]:
    """thop's per-cell count split as (MACs, bias adds, other gate ops), from ``rnn_hooks.py``."""
    if kind in ("RNN", "RNNCell"):  # h*(i+h) + h (+2h)
        return h * (i + h), 2 * h if bias else 0, h
    if kind in ("GRU", "GRUCell"):  # 3*[(h+i)*h + h] (+6h) + h + 3h
        return 3 * h * (i + h), 6 * h if bias else 0, 3 * h + h + 3 * h
    # LSTM: 4*[(i+h)*h + h] (+8h) + 3h + h
    return 4 * h * (i + h), 8 * h if bias else 0, 4 * h + 3 * h + h


class ThopConvention(Convention):
    tool = "thop"
    unit = "MACs"
    metric = "ops"
    headline_metric = "macs"
    metrics = {"macs": "ops", "params": "params"}
    rules = (
        RuleDoc("unit", "MACs (multiplications only); bias adds never counted"),
        RuleDoc("matching", "forward hooks on modules whose exact type has a rule; subclasses and functional calls are invisible"),
        RuleDoc("Conv / ConvTranspose", "N_out * (Cin/g) * K (transposed too, so about stride^d too large there)"),
        RuleDoc("Linear", "in_features * N_out"),
        RuleDoc("BatchNorm / LayerNorm / InstanceNorm", "2 * N_in, doubled when affine; GroupNorm: no rule (0)"),
        RuleDoc("ReLU / ReLU6 / LeakyReLU / MaxPool / Dropout", "0"),
        RuleDoc("PReLU", "N_in"),
        RuleDoc("Softmax", "(N_in / n) * (3n - 1), n = size of the softmax dim"),
        RuleDoc("AvgPool / AdaptiveAvgPool", "N_out / int((prod(S_in / S_out) + 1) * N_out)"),
        RuleDoc("Upsample", "per output element: nearest 1, linear 5, bilinear 11, bicubic 259, trilinear 0"),
        RuleDoc("RNN / GRU / LSTM (+ cells)", "per step and sample: gate MACs + 1 per gate + bias 2 per gate + cell ops; padded steps for packed input"),
        RuleDoc("MultiheadAttention, GELU, SiLU, Embedding, GroupNorm, ...", "no rule: 0 ops and 0 params"),
        RuleDoc("params", "sum(m.parameters()) of modules with a rule that ran; tied weights once per module; container-owned parameters missed"),
        RuleDoc("repeated modules", "ops summed over calls; params once"),
        RuleDoc("shared modules", "a module registered under k parents (named_children() paths) is hooked k times, so each "
                "call counts k times, and dfs_count adds its total_ops and total_params under each path: k^2 x its "
                "MACs, k x its params (shared_module)"),
        RuleDoc("batch", "whole batch"),
    )

    def predict(self, native: NativeCount) -> Prediction:
        tree = common.Tree(native)
        walked = common.walked_paths(native)
        layers: list[LayerPrediction] = []
        holders = {p.rsplit(".", 1)[0] for p in walked if "." in p}
        stops = lambda r: r.attrs.get("class") in REGISTERED and r.attrs.get("class") != f"{_NN}container.Sequential"  # noqa: E731
        for row in tree.terminal(stops):
            if not stops(row) and row.name in holders:
                continue  # its children are registered first elsewhere: dfs_count adds them here as their other paths
            others = [p for p in row.attrs.get("_aliases", ()) if p in walked]
            layers.append(self._row(tree, row, 1 + len(others)))
            layers.extend(self._other_paths(row, layers[-1], others))
        if not layers:
            layers.append(self._row(tree, tree.rows[""]))
        layers.extend(common.uncovered_rows(tree, layers, "ops", "params", self.tool))
        ops = sum(p.predicted["ops"] for p in layers)
        params = sum(p.predicted["params"] for p in layers)
        return Prediction(self.tool, self.metric, self.unit, tuple(layers), headline={"macs": ops, "params": params},
                          headline_reference={"macs": ops, "params": params})

    def _row(self, tree: "common.Tree", row: ModuleRow, paths: int = 1) -> LayerPrediction:
        cls = row.attrs.get("class", "")
        ref_ops = tree.macs(row.name)
        ref_params = tree.params(row.name)
        ops_terms: list[Term] = []
        if cls not in REGISTERED:
            ops = 0
            if ref_ops or tree.flops(row.name):
                ops_terms.append(Term("unsupported_module", -ref_ops,
                                      "thop.unsupported_module",
                                      Phrase("thop has no rule for {type!s} (it matches exact types): its {ref_ops} MACs "
                                      "and {flops} FLOPs are not counted", {"type": row.type, "ref_ops": ref_ops,
                                                                            "flops": tree.flops(row.name)}),
                                      flops=-tree.flops(row.name)))
            params = 0
        else:
            ops = 0
            for call in row.call_records:
                ops += self._call_ops(row, call, ops_terms)
            # dfs_count starts the root at 0 and never adds its parameters: a childless root has none
            params = tree.params_with_aliases(row.name) if row.calls and row.name else 0
            diff = ops - ref_ops - sum(t.amount for t in ops_terms)
            if diff:  # the formula's own difference from the MAC reference (e.g. transposed conv)
                ops_terms.append(Term("formula", diff, "thop.formula", Phrase("thop's {type!s} formula gives {v} "
                                      "where the MAC count is {ref_ops}", {"type": row.type, "v": ref_ops + diff,
                                                                           "ref_ops": ref_ops})))
        # a module registered under several parents (coat's cpe1, held by the root and by each
        # serial block of its stage) is reached by model.apply once per path: its hook is
        # registered, and so counts each call, once per path (params are set, not added)
        if paths > 1 and cls in REGISTERED and ops:
            ops_terms.append(Term("shared_module", (paths - 1) * ops, "thop.shared_module.hooks",
                                  Phrase("thop's model.apply(add_hooks) reaches {type!s} by {paths} paths, so {paths} "
                                         "hooks count each call: {ops} counted {paths} times",
                                         {"type": row.type, "paths": paths, "ops": ops})))
            ops *= paths
        params_terms = common.param_terms(self.tool, row, params, ref_params, registered=cls in REGISTERED)
        return LayerPrediction(row.name, row.type, row.calls, {"ops": ref_ops, "params": ref_params},
                               {"ops": ops, "params": params}, {"ops": tuple(ops_terms), "params": params_terms})

    @staticmethod
    def _other_paths(row: ModuleRow, first: LayerPrediction, others: list[str]) -> list[LayerPrediction]:
        """dfs_count walks named_children() with no memo: a module registered under several parents
        is added to the total once per path, each time with its whole total_ops and total_params
        (the adapter's row of each other path is named by that path). Nothing native counts there."""
        out = []
        for path in others:
            got = {"ops": first.predicted["ops"], "params": first.predicted["params"]}
            terms = {m: (Term("shared_module", v, f"thop.shared_module.{m}",
                                  Phrase("thop's dfs_count reaches {type!s} {name!s} again by {path!s} and adds "
                                         "its {v} " + ("ops" if m == "ops" else "parameters") + " once more",
                                         {"type": row.type, "name": row.name, "path": path, "v": v})),) if v else ()
                     for m, v in got.items()}
            out.append(LayerPrediction(path, row.type, row.calls, {"ops": 0, "params": 0}, got, terms))
        return out

    def _call_ops(self, row: ModuleRow, call, terms: list[Term]) -> int:
        """thop's count for one call, adding a term for every part outside the MAC reference."""
        cls, a = row.attrs["class"], row.attrs
        name = cls.rsplit(".", 1)[-1]
        if cls in CONV:
            cin = call.inputs[0].shape[1]
            return n_out(call) * (cin // a["groups"]) * numel(a["kernel_size"])
        if cls in LINEAR:
            return a["in_features"] * n_out(call)
        if cls in NORM:
            affine = a.get("affine", False) or a.get("elementwise_affine", False)
            v = 2 * n_in(call) * (2 if affine else 1)
            terms.append(Term("norm", v, "thop.norm", Phrase("{name!s} counted as {v!s} ops per element: "
                              "{v!s} x {n_in}", {"name": name, "v": 4 if affine else 2, "n_in": n_in(call)})))
            return v
        if cls in PRELU:
            terms.append(Term("activation", n_in(call), "thop.activation",
                              Phrase("PReLU counted as 1 op per element: {n_in}", {"n_in": n_in(call)})))
            return n_in(call)
        if cls in SOFTMAX:
            nf = call.inputs[0].shape[a["dim"]]
            v = (n_in(call) // nf) * (3 * nf - 1)
            terms.append(Term("softmax", v, "thop.softmax",
                              Phrase("Softmax counted as 3n-1 ops per row of n = {nf!s}: {v}", {"nf": nf, "v": v})))
            return v
        if cls in AVG:
            terms.append(Term("pool", n_out(call), "thop.pool",
                              Phrase("{name!s} counted as 1 op per output element: {n_out}", {"name": name,
                                                                                              "n_out": n_out(call)})))
            return n_out(call)
        if cls in ADAPTIVE_AVG:
            s_in, s_out = call.inputs[0].shape[2:], call.outputs[0].shape[2:]
            kernel = 1.0
            for i, o in zip(s_in, s_out):
                kernel *= float(i) / float(o)  # float64, as thop's DoubleTensor division and prod
            v = int((kernel + 1) * n_out(call))
            terms.append(Term("pool", v, "thop.pool.2",
                              Phrase("{name!s} counted as (window + 1) per output element: {v}", {"name": name,
                                                                                                  "v": v})))
            return v
        if cls in UPSAMPLE:
            cost = _UPSAMPLE_COST.get(a.get("mode", "nearest"), 0)
            v = cost * n_out(call)
            if v:
                terms.append(Term("interpolate", v, "thop.interpolate",
                                  Phrase("{name!s} ({get!s}) counted as {cost!s} ops per output element", {"name": name,
                                                                                                           "get": a.get('mode'), "cost": cost})))
            return v
        if cls in RNN or cls in CELL:
            return self._rnn_ops(row, call, terms)
        return 0  # registered zero_ops: ReLU, ReLU6, LeakyReLU, max pools, Dropout, ZeroPad2d, PixelShuffle

    def _rnn_ops(self, row: ModuleRow, call, terms: list[Term]) -> int:
        a = row.attrs
        kind = row.type
        h, bias = a["hidden_size"], a["bias"]
        x = call.inputs[0].shape
        if kind.endswith("Cell"):
            units = x[0]  # thop: x[0].size(0), the batch (or the features of an unbatched input)
            per = _cell_ops(kind, a["input_size"], h, bias)
        else:
            # thop: batch_first -> (B, T); else (T, B) = x.size(1), x.size(0); unbatched input breaks this
            units = x[0] * x[1] if len(x) >= 2 else x[0]
            dirs = 2 if a["bidirectional"] else 1
            per = tuple(v * dirs for v in _cell_ops(kind, a["input_size"], h, bias))
            for _ in range(a["num_layers"] - 1):
                nxt = _cell_ops(kind, h * dirs, h, bias)
                per = tuple(p + v * dirs for p, v in zip(per, nxt))
        macs, bias_ops, gates = (units * v for v in per)
        if bias_ops:
            terms.append(Term("bias", bias_ops, "thop.bias", Phrase("{kind!s} bias adds counted: {bias_ops}",
                                                                    {"kind": kind, "bias_ops": bias_ops})))
        terms.append(Term("rnn_gates", gates, "thop.rnn_gates", Phrase("{kind!s} gate arithmetic counted: {gates}",
                                                                       {"kind": kind, "gates": gates})))
        return macs + bias_ops + gates


CONVENTION = ThopConvention()
