"""Causes as data: a term records its rule and values, ``report/sentences.py`` renders them, and the
per-layer grouping compares rules and values (numbers left out), never rendered text.

Synthetic explanations only (no torch): each sentence below is worked out by hand.
"""

from __future__ import annotations

import ast
from fractions import Fraction
from pathlib import Path

import pytest

from reconcile.conventions.base import Term, joined
from reconcile.explain.core import Cause, LayerExplanation
from reconcile.records import Phrase
from reconcile.report.grouping import group_layers
from reconcile.report.sentences import numbers_out, phrase, sentence, shape

ROOT = Path(__file__).resolve().parents[1]


def _norm(n: int, k: int = 4) -> Term:
    return Term("norm", k * n, "tally.norm", Phrase("{name} counted as {k!s} ops per element: {k!s} x {n}",
                                                     {"name": "BatchNorm2d", "k": k, "n": n}))


def test_numbers_are_rendered_exact_only_when_the_sentence_is_made():
    t = _norm(200_704)
    assert t.sentence.values["n"] == 200_704  # the record holds the int, not "200,704"
    assert sentence(t) == "BatchNorm2d counted as 4 ops per element: 4 x 200,704"
    # "!s" shows a number plain (a kernel, a batch); a Fraction exact; a ratio to its digits
    assert phrase(Phrase("{a!s} and {a}", {"a": 1024})) == "1024 and 1,024"
    assert phrase(Phrase("{f}", {"f": Fraction(3, 2)})) == "1 1/2"
    assert phrase(Phrase("{r:.2f}x", {"r": Fraction(7, 3)})) == "2.33x"  # 7/3 = 2.333...


def test_phrases_nest_and_lists_stay_data():
    # "conv 1,000, bias 10" as a list of (name, number) phrases joined by ", "
    families = joined([Phrase("{k!s} {v}", {"k": k, "v": v}) for k, v in (("conv", 1000), ("bias", 10))], ", ")
    t = Term("functional_not_seen", -1000, "tally.functional", Phrase("misses {families}", {"families": families}))
    assert sentence(t) == "misses conv 1,000, bias 10"
    assert phrase(joined([], ", ", "no arithmetic")) == "no arithmetic"
    assert phrase(joined([7, 7], "x", slot="!s")) == "7x7"


def test_shape_compares_rule_and_values_without_numbers():
    # the same rule on layers of other sizes is one formula ...
    assert shape(_norm(200_704)) == shape(_norm(50_176))
    # ... another rule saying the same words is not
    other = Term("norm", 4, "other.norm", _norm(1).sentence)
    assert shape(other) != shape(_norm(1))
    # how a slot is shown is rendering, not the formula: "{n!s}" and "{n}" are one shape
    a = Term("bias", 1, "tally.bias", Phrase("x {o}", {"o": Phrase("{n} outputs", {"n": 802_816})}))
    b = Term("bias", 1, "tally.bias", Phrase("x {o}", {"o": Phrase("{n!s} outputs", {"n": 1000})}))
    assert shape(a) == shape(b) and sentence(a) == "x 802,816 outputs" and sentence(b) == "x 1000 outputs"
    # digits in a name are left out too (BatchNorm1d and BatchNorm2d state one formula)
    assert numbers_out(_norm(200_704)) == "BatchNorm#d counted as # ops per element: # x #"


def _layer(name: str, n: int, rule: str = "tally.norm") -> LayerExplanation:
    t = _norm(n)
    cause = Cause("norm", "convention", 4 * n, rule, t.sentence)
    return LayerExplanation(name, "BatchNorm2d", 1, None, {"ops": 4 * n}, {"ops": 4 * n}, {"ops": 0}, {"ops": 0},
                            {"ops": (cause,)})


class _Tool:
    tool, metric = "tally", "ops"


def test_grouping_reads_rules_not_text():
    # bn.0 and bn.1: one rule, other sizes -> one group; bn.2 says the same words under another
    # rule -> a group of its own (text-based grouping merged it)
    layers = {"bn.0": _layer("bn.0", 100), "bn.1": _layer("bn.1", 300), "bn.2": _layer("bn.2", 100, "other.norm")}
    by_module = {m: {"tally": le} for m, le in layers.items()}
    groups = group_layers([_Tool()], list(layers), by_module, {m: "BatchNorm2d" for m in layers}, {m: 0 for m in layers})
    assert [g.modules for g in groups] == [("bn.0", "bn.1"), ("bn.2",)]
    # the group's raw is summed: 4 x 100 + 4 x 300 = 1,600
    assert groups[0].raw == (1600,)


def test_no_layer_below_the_renderers_imports_report():
    # records, conventions, explain, counter, adapters, roofline (...) import the number formatter
    # from reconcile.numbers; only the renderers' callers (cli, pipeline, zoo and its page's rows, the package
    # root) import report (and the language-model phases' own renderer, llm/render.py, which uses the report's
    # sentences)
    callers = {"cli.py", "pipeline.py", "zoo.py", "zoo_rows.py", "__init__.py"}
    offenders = []
    for path in (ROOT / "reconcile").rglob("*.py"):
        rel = path.relative_to(ROOT / "reconcile")
        if rel.parts[0] == "report" or (len(rel.parts) == 1 and rel.name in callers) or rel.as_posix() == "llm/render.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "reconcile.report" or n.startswith("reconcile.report.") for n in names):
                offenders.append(str(rel))
    assert offenders == []


@pytest.mark.parametrize("module", sorted(p.stem for p in (ROOT / "reconcile" / "conventions").glob("*.py")))
def test_conventions_format_no_numbers(module):
    # sentences are data: no convention formats a number (reconcile.numbers is the renderers')
    src = (ROOT / "reconcile" / "conventions" / f"{module}.py").read_text()
    assert "reconcile.numbers" not in src and "exact(" not in src
