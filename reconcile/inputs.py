"""Model inputs: what a model is fed, as data, and the tensors made from it.

A model's input is a tuple of ``InputSpec``: one per tensor, optionally named after a parameter
of ``forward`` (``input_ids``, ``attention_mask``). Guarantees:

- An ``InputSpec`` is validated when made: a mistake is a one-line ``ReconcileError``.
- ``make_inputs`` gives the same values for the same specs on every call (seeded), empty tensors
  on meta, and always a positional tuple: named inputs are put in ``forward``'s parameter order
  (a skipped parameter gets its default), so every tool that only takes positional inputs can
  run a model with keyword inputs.
- Parsing user text (``parse_input``, ``parse_input_shape``, ``parse_dtype``) imports no torch.
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from reconcile.errors import ReconcileError

if TYPE_CHECKING:
    import torch

# Accepted spellings -> canonical dtype name. "long" rather than "int64" because token ids are
# what people mean by it, and the CLI says `--input-dtype long`.
_DTYPE_ALIASES = {
    "float32": "float32", "float": "float32", "fp32": "float32",
    "float16": "float16", "half": "float16", "fp16": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float64": "float64", "double": "float64", "fp64": "float64",
    "long": "long", "int64": "long",
    "int32": "int32", "int": "int32",
}
DTYPES = ("float32", "float16", "bfloat16", "float64", "long", "int32")
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
INTEGER_DTYPES = ("long", "int32")
FILLS = ("random", "ones", "zeros")
_DEFAULT_HIGH = 2  # integer inputs default to {0, 1}: valid ids for any embedding table
# Largest input accepted, in elements: 2**40 (4 TiB of float32) is past any machine, and beyond
# it torch's own size arithmetic overflows into confusing errors.
MAX_ELEMENTS = 2**40
# The largest exclusive upper bound of integer inputs per dtype: values are drawn from [0, high)
# and high itself must fit the dtype (torch.randint takes it as a signed 64-bit integer).
MAX_HIGH = {"long": 2**63 - 1, "int32": 2**31}
# meta inputs up to this many elements carry their CPU values (masks and token ids are small)
_VALUES_LIMIT = 1 << 22
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class InputSpec:
    shape: tuple[int, ...]
    dtype: str = "float32"
    high: int | None = None  # integer inputs are drawn from [0, high); None means 2
    name: str | None = None  # the forward parameter it is passed as; None: positional
    fill: str = "random"  # "random" (seeded), "ones" (attention masks) or "zeros"

    def __post_init__(self) -> None:
        # An InputSpec can come from a user's attributes or the command line, so bad values are
        # the user's to fix, not a bug.
        if not self.shape or not all(type(d) is int and d > 0 for d in self.shape):
            raise ReconcileError(
                f"input shape {self.shape!r} must be a non-empty tuple of positive integers, "
                "e.g. (1, 3, 224, 224)"
            )
        if math.prod(self.shape) > MAX_ELEMENTS:
            raise ReconcileError(
                f"input shape {'x'.join(map(str, self.shape))} has {math.prod(self.shape):,} elements, "
                f"more than reconcile accepts ({MAX_ELEMENTS:,}): give a smaller --input-shape"
            )
        if self.dtype not in DTYPES:
            raise ReconcileError(
                f"input dtype {self.dtype!r} is not supported: use one of {', '.join(DTYPES)}"
            )
        if self.high is not None:
            check_high(self.high, "input high", self.dtype)
        if self.name is not None and not _NAME_RE.match(self.name):
            raise ReconcileError(f"input name {self.name!r} must be a Python identifier, e.g. input_ids")
        if self.fill not in FILLS:
            raise ReconcileError(f"input fill {self.fill!r} must be one of {', '.join(FILLS)}")

    def describe(self) -> str:
        """``input_ids 1x128 long in [0, 30522)``, ``1x3x224x224 float32``."""
        text = f"{'x'.join(map(str, self.shape))} {self.dtype}"
        if self.fill != "random":
            text += f" ({self.fill})"
        elif self.dtype in INTEGER_DTYPES:
            text += f" in [0, {self.high if self.high is not None else _DEFAULT_HIGH})"
        return f"{self.name} {text}" if self.name else text

    def option(self) -> str:
        """The same input as ``--input`` text (``parse_input(spec.option()) == spec``)."""
        text = "x".join(map(str, self.shape))
        if self.dtype != "float32" or self.high is not None or self.fill != "random":
            text += f":{self.dtype}"
        if self.fill != "random":
            text += f":{self.fill}"
        elif self.high is not None:
            text += f":{self.high}"
        return f"{self.name}={text}" if self.name else text


Inputs = tuple[InputSpec, ...]


# ---------------------------------------------------------------------------------------------
# Parsing user text


def parse_input_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` or ``"1x3x224x224"`` (optionally in brackets) -> ``(1, 3, 224, 224)``."""
    expected = "expected positive integers separated by ',' or 'x', e.g. 1,3,224,224"
    body = (text or "").strip()
    if body and body[0] in "([" and body[-1] in ")]":
        body = body[1:-1]
    pieces = [p.strip() for p in re.split(r"[,xX]", body)]
    # A trailing comma as in Python's "(1,)" is a common habit, not a mistake.
    if len(pieces) > 1 and pieces[-1] == "" and body.rstrip().endswith(","):
        pieces.pop()
    if not body.strip() or not all(p.isdigit() and p.isascii() and int(p) > 0 for p in pieces):
        raise ReconcileError(f"bad input shape {text!r}: {expected}")
    return tuple(int(p) for p in pieces)


def parse_dtype(text: str) -> str:
    """``"long"``/``"int64"`` -> ``"long"``, ``"float"``/``"float32"`` -> ``"float32"``, ..."""
    key = (text or "").strip().lower()
    if key.startswith("torch."):
        key = key[len("torch."):]
    if key not in _DTYPE_ALIASES:
        raise ReconcileError(f"unknown input dtype {text!r}: use one of {', '.join(DTYPES)}")
    return _DTYPE_ALIASES[key]


def parse_input(text: str) -> InputSpec:
    """One ``--input``: ``[NAME=]SHAPE[:DTYPE[:HIGH|ones|zeros]]``.

    ``input_ids=1x128:long:30522``, ``attention_mask=1x128:long:ones``, ``1x3x224x224``,
    ``pixel_values=1x3x224x224:bfloat16``.
    """
    usage = ("write [NAME=]SHAPE[:DTYPE[:HIGH|ones|zeros]], e.g. input_ids=1x128:long:30522 or "
             "attention_mask=1x128:long:ones")
    body = (text or "").strip()
    name = None
    if "=" in body:
        name, _, body = body.partition("=")
        name = name.strip()
        if not _NAME_RE.match(name):
            raise ReconcileError(f"bad --input {text!r}: {name!r} is not a parameter name; {usage}")
    parts = [p.strip() for p in body.split(":")]
    if not parts[0] or len(parts) > 3:
        raise ReconcileError(f"bad --input {text!r}: {usage}")
    try:
        shape = parse_input_shape(parts[0])
    except ReconcileError:
        raise ReconcileError(f"bad --input {text!r}: the shape {parts[0]!r} is not positive integers "
                             f"separated by 'x'; {usage}") from None
    dtype = parse_dtype(parts[1]) if len(parts) > 1 else "float32"
    high, fill = None, "random"
    if len(parts) > 2:
        last = parts[2].lower()
        if last in FILLS:
            fill = last
        elif last.isdigit() and last.isascii() and int(last) > 0:
            high = int(last)
        else:
            raise ReconcileError(f"bad --input {text!r}: {parts[2]!r} is neither a positive upper bound "
                                 f"nor ones/zeros; {usage}")
        if high is not None and dtype not in INTEGER_DTYPES:
            raise ReconcileError(f"bad --input {text!r}: an upper bound only applies to integer dtypes "
                                 f"(long, int32); {usage}")
    return InputSpec(shape, dtype, high, name, fill)


def check_high(high: Any, what: str = "--input-high", dtype: str | None = None) -> int:
    """``high`` if it is a usable exclusive upper bound of integer inputs, else a ReconcileError:
    at least 1 and at most what the dtype holds (``MAX_HIGH``: 2**63 - 1 for long, 2**31 for
    int32; without a dtype, long's, the widest), since values are drawn from [0, high)."""
    limit = MAX_HIGH.get(dtype or "long", MAX_HIGH["long"])
    if type(high) is not int or not 1 <= high <= limit:
        shown = f"{high:,}" if type(high) is int else repr(high)
        raise ReconcileError(
            f"{what} {shown} must be an integer from 1 to {limit:,} ({'2**31' if limit == 2**31 else '2**63 - 1'}: "
            f"integer inputs are drawn from [0, high) as {dtype if dtype in MAX_HIGH else 'long'} values, "
            f"which cannot be larger)"
        )
    return high


def check_inputs(inputs: Sequence[InputSpec]) -> Inputs:
    """A model's inputs as a tuple: at least one, names unique, positional ones first."""
    inputs = tuple(inputs)
    if not inputs:
        raise ReconcileError("a model needs at least one input")
    names = [i.name for i in inputs if i.name]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ReconcileError(f"input {dup!r} is given twice: name each input once")
    seen_named = False
    for i in inputs:
        if i.name:
            seen_named = True
        elif seen_named:
            raise ReconcileError("positional inputs (without NAME=) must come before named ones")
    return inputs


# inputs listed by name and shape on one line; past this, the first and last few and how many
DESCRIBE_LIMIT = 12


def describe(inputs: Sequence[InputSpec], limit: int = DESCRIBE_LIMIT) -> str:
    return elide([i.describe() for i in inputs], limit)


def elide(texts: Sequence[str], limit: int = DESCRIBE_LIMIT) -> str:
    """``texts`` joined by ", ", or, past ``limit`` of them, the first and last few and how many
    there are: a model with 20,000 inputs gets a line, not 350 KB of one."""
    if len(texts) <= limit:
        return ", ".join(texts)
    head, tail = texts[: limit - 2], texts[-2:]
    return f"{', '.join(head)}, ... {', '.join(tail)} ({len(texts):,} inputs, {len(texts) - limit:,} not shown)"


def with_dtype(inputs: Sequence[InputSpec], dtype: str | None, high: int | None) -> Inputs:
    """``--input-dtype`` / ``--input-high`` applied to a model's default inputs: a float dtype
    replaces the dtype of floating inputs (images), an integer one that of every positional input;
    ``high`` applies to integer inputs drawn at random."""
    out = []
    for i in inputs:
        d = i.dtype
        if dtype is not None and dtype != "float32":
            if dtype in FLOAT_DTYPES and i.dtype in FLOAT_DTYPES:
                d = dtype
            elif dtype in INTEGER_DTYPES and i.name is None:
                d = dtype
        h = i.high
        if high is not None and d in INTEGER_DTYPES and i.fill == "random":
            h = high
        out.append(InputSpec(i.shape, d, h if d in INTEGER_DTYPES else None, i.name, i.fill))
    return tuple(out)


def model_dtype(inputs: Sequence[InputSpec]) -> str | None:
    """The dtype a model runs in: that of its floating inputs when it is not float32 (so
    ``--input-dtype bfloat16`` runs the model in bfloat16), else None (as built)."""
    floats = {i.dtype for i in inputs if i.dtype in FLOAT_DTYPES}
    if len(floats) > 1:
        raise ReconcileError(f"floating inputs of several dtypes ({', '.join(sorted(floats))}): "
                             "give them one dtype, which the model then runs in")
    d = next(iter(floats), None)
    return d if d not in (None, "float32") else None


# ---------------------------------------------------------------------------------------------
# Tensors


def torch_dtype(name: str) -> "torch.dtype":
    import torch

    return {
        "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
        "float64": torch.float64, "long": torch.long, "int32": torch.int32,
    }[name]


def make_tensor(inp: InputSpec, device: str, seed: int = 0) -> "torch.Tensor":
    """Seeded values on CPU, an empty tensor on meta."""
    import torch

    dtype = torch_dtype(inp.dtype)
    if device == "meta":
        meta = torch.empty(inp.shape, dtype=dtype, device="meta")
        if math.prod(inp.shape) <= _VALUES_LIMIT:
            # the values a CPU run would get, for a forward that reads them (counter/shadow.py)
            from reconcile.counter.shadow import attach

            attach(meta, make_tensor(inp, "cpu", seed))
        return meta
    if inp.fill == "ones":
        return torch.ones(inp.shape, dtype=dtype, device=device)
    if inp.fill == "zeros":
        return torch.zeros(inp.shape, dtype=dtype, device=device)
    gen = torch.Generator().manual_seed(seed)
    if inp.dtype in INTEGER_DTYPES:
        high = inp.high if inp.high is not None else _DEFAULT_HIGH
        x = torch.randint(0, high, inp.shape, generator=gen, dtype=dtype)
    else:
        # Drawn in float32 and cast, so a float16 input holds the same values rounded.
        x = torch.randn(inp.shape, generator=gen, dtype=torch.float32).to(dtype)
    return x.to(device)


def make_inputs(inputs: InputSpec | Sequence[InputSpec], device: str = "cpu", model: Any = None) -> tuple[Any, ...]:
    """The positional arguments of ``model(*args)``: one tensor per spec, named ones placed at
    their parameter's position in ``model.forward`` (``model`` is needed only for named inputs)."""
    if device not in ("meta", "cpu"):
        raise ReconcileError(f"device must be meta or cpu, got {device!r}")
    specs = check_inputs((inputs,) if isinstance(inputs, InputSpec) else inputs)
    # each input gets its own seed, so two inputs of one shape differ
    tensors = [make_tensor(s, device, seed=k) for k, s in enumerate(specs)]
    positional = [t for s, t in zip(specs, tensors) if not s.name]
    named = {s.name: t for s, t in zip(specs, tensors) if s.name}
    if not named:
        return tuple(positional)
    if model is None:
        raise ReconcileError("named inputs need the model, to put them in its forward's order")
    return bind(model, positional, named)


def bind(model: Any, positional: Sequence[Any], named: dict[str, Any]) -> tuple[Any, ...]:
    """``positional`` then ``named`` as one positional tuple in ``model.forward``'s order; a
    parameter between two given ones gets its default value."""
    forward = model.forward
    try:
        sig = inspect.signature(forward)
    except (TypeError, ValueError) as exc:
        raise ReconcileError(f"cannot read the parameters of {type(model).__name__}.forward to place "
                             f"inputs {', '.join(named)}: pass them positionally") from exc
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = [p for p in sig.parameters.values() if p.kind in kinds]
    args = list(positional)
    remaining = dict(named)
    for p in params[len(args):]:
        if not remaining:
            break
        if p.name in remaining:
            args.append(remaining.pop(p.name))
        elif p.default is not inspect.Parameter.empty:
            args.append(p.default)
        else:
            raise ReconcileError(f"{type(model).__name__}.forward needs {p.name!r} before "
                                 f"{elide(list(remaining))}: give it as an input too")
    if remaining:
        known = [p.name for p in params]
        for n in remaining:
            if n in known[: len(positional)]:
                raise ReconcileError(f"input {n!r} is also given positionally: give it once")
        raise ReconcileError(
            f"{type(model).__name__}.forward has no positional parameter {elide(list(map(repr, remaining)))} "
            f"(it takes {elide(known) or 'no named parameters'}): rename the input"
        )
    return tuple(args)
