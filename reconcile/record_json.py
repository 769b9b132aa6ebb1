"""Frozen records to JSON and back, exactly, checked against the records' own field types.

``to_json(obj)`` writes records (dataclasses of a given set), ``Fraction``s, tuples and mappings
so that ``from_json(text, classes, expected)`` gives back an equal object, field for field (a
tuple stays a tuple, a ``Fraction`` a ``Fraction``, a mapping keeps its key types and order).
Unlike ``records.to_plain`` (for reports: lossy on purpose), nothing is dropped: a ``ToolRun``'s
``detail`` is kept.

Loading runs no code from the text: only the record classes passed in can be made, each from
exactly its own fields, every value checked against the field's annotation (``int`` is an int
and not a bool, ``tuple[int, ...]`` a tuple of ints, ``X | None``, ``Mapping[str, int]``, nested
records); a field annotated ``Any`` takes plain JSON values, tagged tuples, fractions, mappings and
the same records. Text that does not fit is a ``ValueError``, never a half-built record.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import math
import types
import typing
from fractions import Fraction
from typing import Any, Iterable

_TUPLE, _FRACTION, _MAP, _RECORD, _FLOAT = "$tuple", "$fraction", "$map", "$record", "$float"
_TAGS = (_TUPLE, _FRACTION, _MAP, _RECORD, _FLOAT)


def to_json(obj: Any) -> str:
    """``obj`` as JSON text; a ``TypeError`` for a value that has no exact JSON form here."""
    return json.dumps(_encode(obj), separators=(",", ":"), allow_nan=False)


def _encode(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else {_FLOAT: repr(v)}
    if isinstance(v, Fraction):
        return {_FRACTION: [v.numerator, v.denominator]}
    if isinstance(v, tuple):
        return {_TUPLE: [_encode(x) for x in v]}
    if isinstance(v, list):
        return [_encode(x) for x in v]
    if isinstance(v, collections.abc.Mapping):
        return {_MAP: [[_encode(k), _encode(x)] for k, x in v.items()]}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {_RECORD: type(v).__name__,
                "fields": {f.name: _encode(getattr(v, f.name)) for f in dataclasses.fields(v) if f.init}}
    raise TypeError(f"no exact JSON form for a {type(v).__name__}")


def from_json(text: str | bytes, classes: Iterable[type], expected: Any) -> Any:
    """The object ``to_json`` wrote, checked to be an ``expected`` (a type or annotation), made only
    of ``classes`` records; ``ValueError`` if the text is not that."""
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    return from_data(data, classes, expected)


def from_data(data: Any, classes: Iterable[type], expected: Any) -> Any:
    """``from_json`` of text already parsed by ``json.loads``."""
    decoder = _Decoder({c.__name__: c for c in classes})
    try:
        return decoder.value(data, expected, "$")
    except RecursionError:
        raise ValueError("nested too deep") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


class _Decoder:
    def __init__(self, classes: dict[str, type]) -> None:
        self.classes = classes
        self.hints: dict[type, dict[str, Any]] = {}

    def value(self, v: Any, t: Any, at: str) -> Any:
        if t is Any or t is object:
            return self.any(v, at)
        origin = typing.get_origin(t)
        if origin in (typing.Union, types.UnionType):
            errors = []
            for option in typing.get_args(t):
                try:
                    return self.value(v, option, at)
                except ValueError as exc:
                    errors.append(str(exc))
            raise ValueError(f"{at}: none of {t} fits ({'; '.join(errors)})")
        if t is type(None):
            if v is not None:
                raise ValueError(f"{at}: expected null")
            return None
        if t is bool:
            if type(v) is not bool:
                raise ValueError(f"{at}: expected a bool")
            return v
        if t is int:
            if type(v) is not int:
                raise ValueError(f"{at}: expected an int")
            return v
        if t is float:
            if type(v) is int:
                return float(v)
            if isinstance(v, dict) and set(v) == {_FLOAT} and v[_FLOAT] in ("nan", "inf", "-inf"):
                return float(v[_FLOAT])
            if type(v) is not float:
                raise ValueError(f"{at}: expected a number")
            return v
        if t is str:
            if type(v) is not str:
                raise ValueError(f"{at}: expected a string")
            return v
        if t is Fraction:
            return self.fraction(v, at)
        if origin is tuple or t is tuple:
            items = self.tagged(v, _TUPLE, list, at)
            args = typing.get_args(t)
            if not args:
                return tuple(self.any(x, f"{at}[{i}]") for i, x in enumerate(items))
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(self.value(x, args[0], f"{at}[{i}]") for i, x in enumerate(items))
            if len(items) != len(args):
                raise ValueError(f"{at}: expected {len(args)} items, got {len(items)}")
            return tuple(self.value(x, a, f"{at}[{i}]") for i, (x, a) in enumerate(zip(items, args)))
        if origin is list or t is list:
            if type(v) is not list:
                raise ValueError(f"{at}: expected a list")
            (a,) = typing.get_args(t) or (Any,)
            return [self.value(x, a, f"{at}[{i}]") for i, x in enumerate(v)]
        if origin in (dict, collections.abc.Mapping) or t in (dict, collections.abc.Mapping):
            pairs = self.tagged(v, _MAP, list, at)
            kt, vt = typing.get_args(t) or (Any, Any)
            out = {}
            for i, pair in enumerate(pairs):
                if type(pair) is not list or len(pair) != 2:
                    raise ValueError(f"{at}: item {i} is not a key-value pair")
                key = self.value(pair[0], kt, f"{at}.key{i}")
                if not isinstance(key, collections.abc.Hashable):
                    raise ValueError(f"{at}: key {i} cannot be a key")
                out[key] = self.value(pair[1], vt, f"{at}[{key!r}]")
            return out
        if isinstance(t, type) and dataclasses.is_dataclass(t):
            return self.record(v, t, at)
        raise ValueError(f"{at}: a field of type {t} cannot be read back")

    def any(self, v: Any, at: str) -> Any:
        """A value of an ``Any`` field: plain JSON, or one of the tags (records of ``classes`` only)."""
        if v is None or type(v) in (bool, int, float, str):
            return v
        if type(v) is list:
            return [self.any(x, f"{at}[{i}]") for i, x in enumerate(v)]
        if type(v) is dict and len(v) >= 1:
            tag = next(iter(v))
            if tag == _TUPLE:
                return self.value(v, tuple, at)
            if tag == _FRACTION:
                return self.fraction(v, at)
            if tag == _MAP:
                return self.value(v, dict, at)
            if tag == _FLOAT:
                return self.value(v, float, at)
            if tag == _RECORD:
                cls = self.classes.get(v.get(_RECORD)) if isinstance(v.get(_RECORD), str) else None
                if cls is None:
                    raise ValueError(f"{at}: {v.get(_RECORD)!r} is not a record that can be read back")
                return self.record(v, cls, at)
        raise ValueError(f"{at}: unexpected {type(v).__name__}")

    def tagged(self, v: Any, tag: str, kind: type, at: str) -> Any:
        if type(v) is not dict or set(v) != {tag} or type(v[tag]) is not kind:
            raise ValueError(f"{at}: expected {tag}")
        return v[tag]

    def fraction(self, v: Any, at: str) -> Fraction:
        pair = self.tagged(v, _FRACTION, list, at)
        if len(pair) != 2 or any(type(x) is not int for x in pair) or pair[1] <= 0:
            raise ValueError(f"{at}: a fraction is two ints, the second positive")
        f = Fraction(pair[0], pair[1])
        if (f.numerator, f.denominator) != tuple(pair):
            raise ValueError(f"{at}: a fraction must be in lowest terms")
        return f

    def record(self, v: Any, cls: type, at: str) -> Any:
        if type(v) is not dict or set(v) != {_RECORD, "fields"} or v[_RECORD] != cls.__name__ \
                or type(v["fields"]) is not dict:
            raise ValueError(f"{at}: expected a {cls.__name__} record")
        if self.classes.get(cls.__name__) is not cls:
            raise ValueError(f"{at}: {cls.__name__} is not a record that can be read back")
        hints = self.hints.get(cls)
        if hints is None:
            hints = self.hints[cls] = typing.get_type_hints(cls)
        given = v["fields"]
        init = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = set(given) - set(init)
        if unknown:
            raise ValueError(f"{at}: {cls.__name__} has no field {sorted(unknown)[0]!r}")
        missing = [n for n, f in init.items() if n not in given
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ValueError(f"{at}: {cls.__name__} lacks its field {missing[0]!r}")
        values = {name: self.value(x, hints[name], f"{at}.{name}") for name, x in given.items()}
        try:
            return cls(**values)
        except Exception as exc:  # noqa: BLE001 - a record's own check (a status, an input shape)
            raise ValueError(f"{at}: not a valid {cls.__name__}: {exc}") from None
