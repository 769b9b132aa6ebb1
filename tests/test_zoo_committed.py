"""The committed whole-timm zoo (issue 23): ``reports/.zoo-runs/timm/rows.jsonl`` and the page made
from it, ``reports/zoo-timm-all.md``, against this checkout. The rows took many hours to count, so
nothing here counts them again: these tests say when they no longer describe this code and these
versions, and what to run.

- every model of ``timm.list_models()`` has a row, under the key a ``--resume`` here would look
  for (a row of other versions or tools is not reused: the model would be counted again);
- every tool that ran on a model is explained to the last row, and every tool that did not run
  says why;
- the committed page is exactly what ``--page-only`` writes from the committed rows with this code
  (a change to any ``.py`` file of the package changes ``code_version``, and the page must then
  say which rows were explained by other code);
- native's count now, on a sample of small models of different families, is the rows' count.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reconcile import zoo
from reconcile.config import ZOO_TIMEOUT
from reconcile.zoo_rows import ROWS_FILE, read_rows

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "reports" / zoo.runs_folder(".", "timm")
PAGE = ROOT / "reports" / zoo.zoo_file("timm", whole=True)
PAGE_AGAIN = ("`.venv/bin/python -m reconcile zoo --source timm --subset all --page-only --out reports` "
              "(`make zoo SOURCE=timm SUBSET=all PAGE=1`)")


@pytest.fixture(scope="module")
def rows():
    kept, notes = read_rows(FOLDER)
    assert not notes, notes  # every committed line reads back
    return kept


def test_every_timm_model_has_a_row_under_the_key_a_resume_here_looks_for(rows):
    from reconcile import pipeline

    names = zoo.models_of("timm", "all")
    assert len(names) == 1371  # timm 1.0.31's timm.list_models() (pyproject pins timm)
    missing = [n for n in names if n not in rows]
    assert not missing, f"{len(missing)} timm models have no committed row, e.g. {missing[:5]}"
    extra = sorted(set(rows) - set(names))
    assert not extra, f"{len(extra)} committed rows are of models timm no longer lists, e.g. {extra[:5]}"
    tools = list(pipeline.parse_tools(None))  # the default run, as `reconcile zoo` runs it
    stale = [n for n in names if rows[n][0] != zoo.run_key(n, tools, ZOO_TIMEOUT)]
    assert not stale, (f"{len(stale)} committed rows were made with other tools, timeout or installed versions "
                       f"than this checkout's (a --resume would count them again), e.g. {stale[:3]}: "
                       f"{rows[stale[0]][0]['versions']}")  # a message is made only when the assert fails


def test_every_tool_that_ran_is_explained_and_every_other_says_why(rows):
    gaps, silent = [], []
    for name, (key, row) in rows.items():
        assert [c.tool for c in row.tools] == key["tools"], name  # a cell per tool, in the run's order
        assert row.macs and row.params, name  # native counted every model, on meta if nowhere else
        for cell in row.tools:
            if cell.share.status == "ok" and not cell.share.complete:
                gaps.append(f"{name} {cell.tool} {cell.share.text()}")
            if cell.share.status != "ok" and not any(cell.tool in u.split(":")[0].split(", ")
                                                     for u in row.unfinished):
                silent.append(f"{name} {cell.tool}")
    assert not gaps, gaps[:10]
    assert not silent, silent[:10]


def test_the_committed_page_is_what_its_rows_give_with_this_code(tmp_path):
    from reconcile import cli

    kept = tmp_path / zoo.runs_folder(".", "timm")
    kept.mkdir(parents=True)
    shutil.copy(FOLDER / ROWS_FILE, kept / ROWS_FILE)
    assert cli.main(["zoo", "--source", "timm", "--subset", "all", "--page-only", "--out", str(tmp_path)]) == 0
    written = (tmp_path / PAGE.name).read_text()
    assert written == PAGE.read_text(), f"{PAGE.name} is not what its rows give with this code: run {PAGE_AGAIN}"
    assert (kept / ROWS_FILE).read_bytes() == (FOLDER / ROWS_FILE).read_bytes()  # --page-only writes no row


# one small model of each of several families, from the committed rows: their MACs and parameters
# as native counts them now, in a worker as the zoo runs it, must be the rows' (a change to what
# native counts needs the zoo counted again: `--resume --recount-earlier` after a `code` change)
SAMPLE = ("timm:resnet18", "timm:mobilenetv3_small_050", "timm:convnext_atto", "timm:vit_tiny_patch16_224",
          "timm:efficientvit_m0", "timm:levit_128s", "timm:coat_tiny", "timm:regnetx_002")


def test_native_counts_a_sample_of_the_rows_as_they_say(rows):
    import reconcile

    reports = reconcile.compare(list(SAMPLE), tools="native", timeout=ZOO_TIMEOUT)
    assert not [r.error for r in reports if r.error]
    got = {r.model: (r.native_totals["macs"], r.native_totals["params"]) for r in reports}
    want = {name: (rows[name][1].macs, rows[name][1].params) for name in SAMPLE}
    assert got == want
