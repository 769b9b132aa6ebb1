"""Command line: ``reconcile <command> ...``. The only layer that writes to the terminal.

User mistakes (``ReconcileError``) print one line on stderr and exit with code 2; a model that
fails does not stop the other models of the same run. Bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from reconcile.config import DEVICES, FORMATS, RunConfig
from reconcile.errors import ReconcileError


def _err(msg: str) -> None:
    print(f"reconcile: error: {msg}", file=sys.stderr)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("specs", metavar="SPEC[,SPEC...]",
                   help="torchvision model names (resnet18) or package.module:callable, comma-separated")
    p.add_argument("--input-shape", metavar="N,C,H,W", help="input shape with batch, e.g. 1,3,224,224 "
                   "(default: the model's published eval size)")
    p.add_argument("--input-dtype", default="float32", metavar="DTYPE",
                   help="input dtype: float32 (default), long for token ids, ...")
    p.add_argument("--input-high", type=int, metavar="N", help="integer inputs are drawn from [0, N)")


def _config(ns: argparse.Namespace) -> RunConfig:
    from reconcile import models

    shape = models.parse_input_shape(ns.input_shape) if getattr(ns, "input_shape", None) else None
    dtype = models.parse_dtype(ns.input_dtype) if getattr(ns, "input_dtype", None) else "float32"
    tools = tuple(t.strip() for t in ns.tools.split(",") if t.strip()) if getattr(ns, "tools", None) else ()
    return RunConfig(
        input_shape=shape,
        input_dtype=dtype,
        input_high=getattr(ns, "input_high", None),
        device=getattr(ns, "device", "meta"),
        mode=getattr(ns, "mode", "eval"),
        depth=getattr(ns, "depth", None),
        format=getattr(ns, "format", "table"),
        tools=tools,
        timeout=getattr(ns, "timeout", 300.0),
        out=getattr(ns, "out", "reports"),
    )


def _input_for(spec, cfg: RunConfig):
    from reconcile import models

    if cfg.input_shape is None:
        inp = models.default_input(spec)
        if cfg.input_dtype != "float32" or cfg.input_high is not None:
            inp = models.InputSpec(inp.shape, cfg.input_dtype, cfg.input_high or inp.high)
        return inp
    return models.InputSpec(cfg.input_shape, cfg.input_dtype, cfg.input_high)


def _each_model(specs_text: str, work: Callable[[object], None]) -> int:
    """Run ``work`` per model spec; a model's ReconcileError is reported and the rest go on."""
    from reconcile import models

    failed = 0
    for text in models.split_specs(specs_text):
        try:
            work(models.resolve(text))
        except ReconcileError as exc:
            _err(str(exc))
            failed += 1
    return 2 if failed else 0


def cmd_count(ns: argparse.Namespace) -> int:
    cfg = _config(ns)
    from reconcile import models
    from reconcile.counter import count
    from reconcile.records import to_plain
    from reconcile.report.text import count_table

    def work(spec) -> None:
        inp = _input_for(spec, cfg)
        model = models.build(spec, device=cfg.device)
        result = count(model, models.make_inputs(inp, device=cfg.device), name=spec.name, mode=cfg.mode)
        depth = cfg.depth if cfg.depth is not None else max(r.depth for r in result.rows)
        if cfg.format == "json":
            plain = to_plain(result)
            obj = {
                "model": spec.name,
                "input_shape": list(inp.shape),
                "input_dtype": inp.dtype,
                "device": result.device,
                "totals": plain["totals"],
                "components": plain["components"],
                "tied": plain["tied"],
                "modules": [_json_row(r) for r in plain["rows"] if r["depth"] <= depth],
            }
            print(json.dumps(obj, sort_keys=False))
        else:
            print(count_table(spec.name, result.input_shapes, result.device, dict(result.totals),
                              result.by_depth(depth)))
            print()
        sys.stdout.flush()

    return _each_model(ns.specs, work)


def _json_row(r: dict) -> dict:
    keep = ("name", "type", "depth", "calls", "components", "flops", "params", "params_trainable",
            "params_frozen", "buffers", "output_elements", "activations", "bytes_read", "bytes_written",
            "ops", "unknown_ops")
    d = {k: r[k] for k in keep}
    d["module"] = d.pop("name")
    d["calls_detail"] = [
        {"inputs": [t["shape"] for t in c["inputs"]], "outputs": [t["shape"] for t in c["outputs"]],
         "components": c["components"]}
        for c in r["call_records"]
    ]
    return d


def cmd_models(ns: argparse.Namespace) -> int:
    from reconcile import models

    for name in models.torchvision_names():
        inp = models.default_input(models.resolve(name))
        print(f"{name:24s} {'x'.join(str(d) for d in inp.shape)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconcile",
        description="Run every PyTorch FLOP/param counter on a model and explain every difference.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("count", help="count models with the native counter (exact, per module)")
    _add_model_args(p)
    p.add_argument("--device", choices=DEVICES, default="meta", help="meta (default: free, exact) or cpu")
    p.add_argument("--mode", choices=("eval", "train"), default="eval", help="count in eval (default) or train mode")
    p.add_argument("--depth", type=int, metavar="N", help="show modules down to depth N (default: all)")
    p.add_argument("--format", choices=FORMATS, default="table", help="table (default) or json (one object per model per line)")
    p.set_defaults(func=cmd_count)

    p = sub.add_parser("models", help="list the torchvision models and their default inputs")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        return ns.func(ns)
    except ReconcileError as exc:
        _err(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
