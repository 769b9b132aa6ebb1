"""The README and docs/ as a newcomer uses them: every Python snippet runs as written and prints
what the README says it prints; every command line shown names a command and options that exist
(and a cheap one is run); every file or page cited is in the repository; the tool list names
every counter. (The report sample's freshness is tests/test_reports.py's, with
scripts/readme_sample.py.)"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from reconcile.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)


def blocks(path: Path) -> list[tuple[str, str, int]]:
    """(language, text, end offset) of every fenced block of a Markdown file."""
    return [(m.group(1), m.group(2), m.end()) for m in FENCE.finditer(path.read_text())]


def python_snippets() -> list[tuple[str, str]]:
    """Each ```python block of the README with the ```text block printed after it ("prints")."""
    text = README.read_text()
    found = []
    for lang, code, end in blocks(README):
        if lang != "python":
            continue
        after = FENCE.search(text, end)
        shown = after is not None and after.group(1) == "text" and text[end:after.start()].strip() == "prints"
        found.append((code, after.group(2) if shown else None))
    return found


SNIPPETS = python_snippets()


def test_the_readme_has_its_python_snippets():
    assert len(SNIPPETS) == 2  # the in-process API, then compare / normalize / explain


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_a_python_snippet_runs_as_written_and_prints_what_the_readme_shows(tmp_path, index):
    code, expected = SNIPPETS[index]
    assert expected is not None, "a README Python snippet is followed by 'prints' and a ```text block of its output"
    script = tmp_path / "snippet.py"
    script.write_text(code)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == expected


def commands(path: Path) -> list[list[str]]:
    """Each `reconcile ...` / `make ...` line of the page's shell blocks, continuation lines
    (indented, under a command) joined to it, comments dropped."""
    out: list[list[str]] = []
    for lang, text, _ in blocks(path):
        if lang not in ("", "sh", "shell", "bash"):
            continue
        for line in text.splitlines():
            code = line.split("  #")[0].split(" # ")[0].rstrip()
            if line.lstrip().startswith("#") or not code.strip():
                continue
            if line.startswith((" ", "\t")) and out:
                out[-1].append(code.strip())
            elif code.startswith(("reconcile ", "make ")):
                out.append([code.strip()])
    return [" ".join(parts).split() for parts in out]


def subcommands() -> dict[str, set[str]]:
    """Each command of `reconcile` and the option strings its parser takes."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return {name: {s for a in p._actions for s in a.option_strings} for name, p in sub.choices.items()}


def make_variables() -> tuple[set[str], set[str]]:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    variables = set(re.findall(r"^([A-Z_]+) \?=", makefile, re.M))
    return targets, variables


# options only `tools`, `report` and `zoo` take, written once on a line of their own in the synopsis
SHARED = {"--executor", "--ray-address"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_shown_exists_with_every_option_shown(page):
    known = subcommands()
    targets, variables = make_variables()
    seen = 0
    for words in commands(page):
        seen += 1
        if words[0] == "make":
            for w in words[1:]:
                if "=" in w:
                    assert w.split("=")[0] in variables, f"{page.name}: make variable {w} not in the Makefile"
                else:
                    assert w in targets, f"{page.name}: make target {w} not in the Makefile"
            continue
        command = words[1]
        assert command in known, f"{page.name}: `reconcile {command}` is no command"
        flags = {f for w in words for f in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", w)}
        missing = flags - known[command] - SHARED
        assert not missing, f"{page.name}: reconcile {command} has no {sorted(missing)}"
        for flag in SHARED & flags:
            assert flag in known["tools"] and flag in known["report"] and flag in known["zoo"]
    if page == README:
        assert seen >= 15


def test_the_readme_synopsis_shows_the_options_a_newcomer_needs():
    synopsis = {words[1]: set(words) for words in commands(README) if words[0] == "reconcile"}
    text = README.read_text()
    # issue 21: the zoo synopsis lacked --models, --tools, --timeout; the report one --hardware
    for option in ("--models", "--tools", "--timeout"):
        assert any(option in w for w in synopsis["zoo"])
    assert any("--hardware" in w for w in synopsis["report"])
    # one truth for --timeout: the defaults the parsers hold, as the README states them
    defaults = {name: next(a.default for a in p._actions if "--timeout" in a.option_strings)
                for name, p in next(a for a in build_parser()._actions
                                    if a.__class__.__name__ == "_SubParsersAction").choices.items()
                if name in ("tools", "report", "zoo")}
    assert defaults["report"] == defaults["tools"]
    assert f"{defaults['tools']:g} s by default, {defaults['zoo']:g} s for `zoo`" in text
    assert len(text.splitlines()) <= 220  # read in five minutes


def test_a_readme_command_runs(tmp_path):
    words = next(w for w in commands(README) if w[:3] == ["reconcile", "count", "resnet18"])
    done = subprocess.run([sys.executable, "-m", "reconcile", *words[1:]], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert done.returncode == 0, done.stderr[-3000:]
    # torchvision's published resnet18 _ops 1.814 G; the table prints the exact native count
    assert "1,814,073,344" in done.stdout


def test_the_tool_list_at_the_top_names_every_counter():
    intro = README.read_text().split("\n## ")[0]
    tool = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction").choices["predict"]
    names = next(a.choices for a in tool._actions if "--tool" in a.option_strings)
    counters = [n for n in names if "@" not in n]  # pinned versions of a tool are not other counters
    # the native counter, and ptflops' aten backend as "its pytorch and aten backends"
    shown = {"native": "**native**", "ptflops-aten": "aten backends", "flopcountermode": "FlopCounterMode"}
    for name in counters:
        assert shown.get(name, name) in intro, f"the README's opening does not name {name}"
    assert f"**{len(counters)} counters**" in intro  # reports say "11 counters"


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
# a repository path in backquotes: a top-level folder of this repository, then a file name
CITED = re.compile(r"`((?:reconcile|tests|scripts|benchmarks|reports|docs)/[\w./-]+\.(?:py|md|toml|png|json|csv))`")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_page_and_file_cited_is_in_the_repository(page):
    text = page.read_text()
    for target in LINK.findall(text):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name} links to {target}, which is not in the repository"
    for path in CITED.findall(text):
        assert (ROOT / path).exists(), f"{page.name} cites {path}, which is not in the repository"
    assert "/work/" not in text  # nothing outside the repository


def test_every_docs_page_is_linked_from_the_readme():
    linked = set(LINK.findall(README.read_text()))
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in linked, f"docs/{page.name} is not linked from the README"
