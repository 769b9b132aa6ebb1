"""The one place where a cause's rule and values become a sentence.

A convention records each cause as data (``Term.rule``, and ``Term.sentence``: a ``Phrase`` with
named slots and the values that fill them); this module fills the slots. A number in a slot without a format spec is shown
exact with thousands separators (``reconcile.numbers.exact``: 200,704; 1,234 1/2); ``!s`` shows it
plain (a kernel size, a count under 1,000 in a formula); a nested ``Phrase`` is rendered the same
way. ``shape`` is the other side: the rule and its values with every number left out, which is
what the report compares to group layers explained by the same formula.
"""

from __future__ import annotations

import re
import string
from fractions import Fraction
from typing import Any, Mapping

from reconcile.numbers import exact
from reconcile.records import Phrase


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, Fraction, float)) and not isinstance(value, bool)


# digits inside a name-like value ("Conv2d", "layer1.0", a shape a convention still builds as a
# string): the same formula on a layer of another size or place
_DIGITS = re.compile(r"\d[\d,]*(?:\.\d+)?")


class _Filler(string.Formatter):
    def __init__(self, hide_numbers: bool = False) -> None:
        self.hide_numbers = hide_numbers

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if isinstance(value, Phrase):
            return self.vformat(value.template, (), value.values)
        if self.hide_numbers and _is_number(value):
            return "#"
        if self.hide_numbers and isinstance(value, str):
            return _DIGITS.sub("#", value)
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> str:
        if value == "#" and self.hide_numbers:
            return value
        if not format_spec and isinstance(value, (int, Fraction)) and not isinstance(value, bool):
            return exact(value)
        if format_spec and isinstance(value, Fraction):  # a ratio shown to some digits: "{ratio:.2f}"
            return format(float(value), format_spec)
        return format(value, format_spec)


_FILLER = _Filler()
_HIDING = _Filler(hide_numbers=True)


def render(template: str, values: Mapping[str, Any]) -> str:
    """``template`` with its slots filled from ``values``."""
    return _FILLER.vformat(template, (), values)


def phrase(p: Phrase) -> str:
    """A ``Phrase`` (a rule of thumb's formula, a training gap's sentence) as text."""
    return render(p.template, p.values)


def numbers_out(term: Any) -> str:
    """The sentence with "#" for every number it is filled with: the formula, in words (the
    report orders a cause's sentences by it)."""
    return _HIDING.vformat(term.sentence.template, (), term.sentence.values)


def sentence(term: Any) -> str:
    """The sentence of a ``Term`` (or of an explained ``Cause``, which carries the same fields)."""
    return render(term.sentence.template, term.sentence.values)


_SLOT = re.compile(r"\{(\w+)(?:![rsa])?(?::[^{}]*)?\}")


def _without_numbers(value: Any) -> Any:
    if isinstance(value, Phrase):
        # how a slot is shown ("!s", a format spec) is rendering, not the formula
        return (_SLOT.sub(r"{\1}", value.template), tuple((k, _without_numbers(v)) for k, v in value.values.items()))
    if isinstance(value, str):
        return _DIGITS.sub("#", value)
    return "#" if _is_number(value) else value


def shape(term: Any) -> tuple:
    """What two causes share when they state the same formula on layers of other sizes: the
    rule, its sentence's slots and its values with every number left out (digits in a name too:
    Conv1d and Conv2d, layer1 and layer2 are the same formula). Compared as data, never as text."""
    return (term.rule, _without_numbers(term.sentence))
