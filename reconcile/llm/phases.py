"""Phases of serving a causal language model, as text and as the forward passes they run.

Imports no torch. A phase is one of

- ``prefill:P`` (``prefill:Bx P`` with a batch): one forward over P prompt tokens into an empty
  cache, logits for every position (what ``model(input_ids)`` computes, and what the other
  counters count);
- ``decode:N``: one forward of one new token per sequence reading a key-value cache that holds N
  tokens (the model attends to N + 1 keys);
- ``generate:P+T``: what ``model.generate(input_ids, max_new_tokens=T)`` runs, greedy: T
  forwards, the prompt first (``logits_to_keep=1``: transformers' generate computes logits for the
  last position only) then T - 1 decode steps at N = P, P + 1, ..., P + T - 2 (the T-th token is
  sampled from the last step's logits and never fed back).

A batch is written ``B*`` in front (``decode:8*1024``); it defaults to 1. ``parse`` turns a
malformed spec into a one-line ``ReconcileError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from reconcile.errors import ReconcileError

KINDS = ("prefill", "decode", "generate")
LIMIT = 1 << 24  # tokens: more is a typo, not a model
_SPEC = re.compile(r"^(?:(\d+)\*)?(\d+)(?:\+(\d+))?$")
EXAMPLES = "prefill:128, decode:1024, generate:128+4, or with a batch decode:8*1024"


@dataclass(frozen=True)
class Step:
    """One forward pass: ``tokens`` new tokens per sequence, appended to a cache holding ``past``
    tokens; ``logits`` positions get logits (0: all of them, as ``logits_to_keep=0``)."""

    batch: int
    tokens: int
    past: int
    logits: int = 0

    @property
    def label(self) -> str:
        return f"prefill {self.batch}x{self.tokens}" if self.past == 0 else \
            f"decode {self.batch}x{self.tokens} at N={self.past}"


@dataclass(frozen=True)
class Phase:
    """``kind`` with ``prompt`` tokens (prefill, generate), ``past`` = N (decode), ``new`` = T
    (generate), ``batch`` sequences."""

    kind: str
    prompt: int = 0
    past: int = 0
    new: int = 0
    batch: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ReconcileError(f"unknown phase {self.kind!r}: use {EXAMPLES}")

    @property
    def text(self) -> str:
        b = f"{self.batch}*" if self.batch != 1 else ""
        if self.kind == "prefill":
            return f"prefill:{b}{self.prompt}"
        if self.kind == "decode":
            return f"decode:{b}{self.past}"
        return f"generate:{b}{self.prompt}+{self.new}"

    def steps(self) -> tuple[Step, ...]:
        """The forward passes of the phase, in order."""
        if self.kind == "prefill":
            return (Step(self.batch, self.prompt, 0, 0),)
        if self.kind == "decode":
            return (Step(self.batch, 1, self.past, 0),)
        first = Step(self.batch, self.prompt, 0, 1)
        return (first, *(Step(self.batch, 1, self.prompt + i, 1) for i in range(self.new - 1)))

    @property
    def tokens(self) -> int:
        """Tokens the phase processes per sequence (prompt tokens in, plus the tokens fed back)."""
        return sum(s.tokens for s in self.steps())

    @property
    def longest(self) -> int:
        """The most positions any step sees (past + new): what the positions table must hold."""
        return max(s.past + s.tokens for s in self.steps())


def parse(text: str) -> Phase:
    """``"decode:1024"`` -> ``Phase("decode", past=1024)``; a bad spec: one ``ReconcileError`` line."""
    kind, colon, body = (text or "").strip().partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS or not colon:
        raise ReconcileError(f"bad phase {text!r}: use {EXAMPLES}")
    m = _SPEC.match(body.replace(" ", ""))
    if not m:
        raise ReconcileError(f"bad phase {text!r}: use {EXAMPLES}")
    batch = int(m.group(1) or 1)
    first = int(m.group(2))
    second = m.group(3)
    if kind == "generate" and second is None:
        raise ReconcileError(f"bad phase {text!r}: a generation is PROMPT+NEW tokens, e.g. generate:128+4")
    if kind != "generate" and second is not None:
        raise ReconcileError(f"bad phase {text!r}: only a generation takes PROMPT+NEW (generate:128+4)")
    for what, v in (("batch", batch), ("token count", first), ("new tokens", int(second or 1))):
        if v < 1 and not (kind == "decode" and what == "token count" and v == 0):
            raise ReconcileError(f"bad phase {text!r}: the {what} must be at least 1")
        if v > LIMIT:
            raise ReconcileError(f"bad phase {text!r}: {v:,} is more than {LIMIT:,}")
    if kind == "prefill":
        return Phase("prefill", prompt=first, batch=batch)
    if kind == "decode":
        return Phase("decode", past=first, batch=batch)
    return Phase("generate", prompt=first, new=int(second), batch=batch)
