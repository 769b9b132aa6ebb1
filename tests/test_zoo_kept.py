"""Kept zoo results (issue 19): gzip-ed JSON that reads back into exactly the records that were
kept, checked on load; a file that does not check (a planted pickle, a malformed body under a
valid key, garbage) is run again with one line on stderr, never trusted, never fatal.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import pickle
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from reconcile import pipeline, zoo
from reconcile.inputs import InputSpec
from reconcile.record_json import from_json, to_json
from reconcile.records import TensorMeta, ToolLayer, ToolRun, TorchCall, TracedOps

ROOT = Path(__file__).resolve().parent.parent


def small_runs(spec: str = "resnet18", native=None) -> pipeline.ModelRuns:
    """A ModelRuns with a value of every kind a kept file must carry exactly: a Fraction, tuples
    (of ints, of records), mappings with int values, None, a float, a bool."""
    thop = ToolRun("thop", "2.0.0", "ok", headline={"macs": 1_814_083_944, "params": Fraction(23, 2)},
                   units={"macs": "MAC"}, layers=(ToolLayer("conv1", "Conv2d", 1, {"MACs": Fraction(7, 3)},
                                                            key="conv1", call=0),),
                   unattributed={"macs": 3}, warnings=("w",), notes=("n",), seconds=1.25)
    failed = ToolRun("fvcore", "0.1.5", "timeout", error_type="Timeout", error_message="no result after 5 s",
                     attempted="fvcore on x (running fvcore)")
    runs = (thop, failed)
    if native is not None:
        runs = (ToolRun("native", "1", "ok", detail=native), *runs)
    return pipeline.ModelRuns(spec, spec, (InputSpec((1, 3, 224, 224)), InputSpec((1, 7), "long", 50, "ids")),
                              native, runs, "", {"_ops": 1.814, "num_params": 11689512}, "eval",
                              ("--input", "1x3x224x224"), False)


def _same(a, b, at="") -> None:
    """Equal field for field, ``detail`` (left out of ``==``) included, and of the same types."""
    assert type(a) is type(b), at
    if dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            _same(getattr(a, f.name), getattr(b, f.name), f"{at}.{f.name}")
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b), at
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{at}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), at
        for k in a:
            _same(a[k], b[k], f"{at}[{k!r}]")
    else:
        assert a == b, at


@pytest.fixture(scope="module")
def counted():
    """A native count with every part a kept file holds: per-call records, Python-level torch
    calls (attention), the backward and training memory (training=True), a trace."""
    import reconcile
    from tests.models_small import SMALL_MODELS

    model, inputs = SMALL_MODELS["attention"]()
    native = reconcile.count(model, inputs, training=True)
    traced = TracedOps({"": {"aten::add": 2}, "head": {"aten::linear": 1}}, {"": {"aten::add": 1}})
    # a watched torch call with every kind of argument a record keeps (nn.MultiheadAttention makes none)
    call = TorchCall("torch.matmul", (TensorMeta((2, 3), "float32"), 1.5, None, (1, 2), "x", True),
                     (("dim", -1),), {"macs": 6}, {"last_dim_contiguous": True})
    rows = (dataclasses.replace(native.rows[0], torch_calls=(call,)), *native.rows[1:])
    return dataclasses.replace(native, traced=traced, rows=rows)


def test_a_model_runs_reads_back_field_for_field(counted):
    kept = small_runs("tests.models_small:attention", counted)
    assert counted.training is not None and counted.training.memory is not None
    assert any(r.torch_calls for r in counted.rows) and any(r.backward is not None for r in counted.rows)
    back = from_json(to_json(kept), zoo._kept_classes(), pipeline.ModelRuns)
    assert back == kept
    _same(kept, back)
    assert back.runs[0].detail == counted  # ToolRun.detail is outside ==: checked on its own
    # and through the kept file itself
    key = zoo.run_key(kept.spec, ("native", "thop", "fvcore"), 5.0)
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"kept-{os.getpid()}.gz"
    try:
        path.write_bytes(zoo.dump_runs(key, kept))
        assert zoo.read_kept(path, key) == (kept, "")
        _same(zoo.load_runs(path, key), kept)
    finally:
        path.unlink(missing_ok=True)


def _body(runs_json: object) -> bytes:
    key = zoo.run_key("resnet18", ("native",), 600.0)
    return gzip.compress(json.dumps({"key": key, "runs": runs_json}).encode())


def _good_fields() -> dict:
    return json.loads(to_json(small_runs()))["fields"]


class _Marker:
    """Pickled, this would run ``exec`` on load: the attack on the old ``.runs.pickle.gz`` files."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('ran')",))


@pytest.mark.parametrize("body, why", [
    (b"garbage", "not a gzip file"),
    (gzip.compress(b"{not json", mtime=0), "not JSON"),
    (gzip.compress(b"[1, 2]", mtime=0), "not a kept result"),
    (_body({"$record": "ModelRuns", "fields": {**_good_fields(), "spec": 5}}), "expected a string"),
    (_body({"$record": "ModelRuns", "fields": {k: v for k, v in _good_fields().items() if k != "name"}}),
     "lacks its field 'name'"),
    (_body({"$record": "ModelRuns", "fields": {**_good_fields(), "evil": 1}}), "has no field 'evil'"),
    (_body({"$record": "ModelRuns", "fields": {**_good_fields(), "native": {"$record": "Popen", "fields": {}}}}),
     "none of"),
    (_body({"$record": "ModelRuns", "fields": {**_good_fields(), "training": 1}}), "expected a bool"),
    (_body({"$record": "ModelRuns", "fields": {**_good_fields(), "runs": {"$tuple": [
        {"$record": "ToolRun", "fields": {"tool": "x", "version": "", "status": "fine"}}]}}}), "not a valid ToolRun"),
    (_body({"$record": "ModelRuns", "fields": {**_good_fields(), "runs": [1]}}), "expected $tuple"),
    (_body({"a": 1}), "expected a ModelRuns record"),
    (_body({"$record": "ModelRuns", "fields": {**_good_fields(), "spec": "resnet50"}}), "holds 'resnet50'"),
])
def test_a_kept_file_that_does_not_check_is_not_used(tmp_path, body, why):
    path = tmp_path / zoo.kept_file("resnet18")
    path.write_bytes(body)
    runs, problem = zoo.read_kept(path, zoo.run_key("resnet18", ("native",), 600.0))
    assert runs is None and why in problem, problem


def test_a_planted_pickle_is_never_loaded(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / zoo.kept_file("resnet18")
    path.write_bytes(gzip.compress(pickle.dumps({"key": zoo.run_key("resnet18", ("native",), 600.0),
                                                 "runs": _Marker(str(marker))})))
    runs, problem = zoo.read_kept(path, zoo.run_key("resnet18", ("native",), 600.0))
    assert runs is None and "not JSON" in problem
    assert not marker.exists()


@pytest.mark.slow
def test_zoo_resume_runs_again_what_does_not_check_and_runs_no_planted_code(tmp_path):
    """Three models kept by a first run; then one kept file gets a malformed body under its valid
    key, one is replaced by a pickle that would write a marker file, and one is deleted with a
    pickle left at the old name. ``--resume`` runs all three again, one line each, rc 0."""
    specs = ["tests.fault_models:good", "tests.fault_models:hang", "tests.fault_models:sys_exit"]
    out = tmp_path / "out"
    args = [sys.executable, "-m", "reconcile", "zoo", "--models", ",".join(specs), "--tools", "native",
            "--timeout", "120", "--out", str(out)]
    env = dict(os.environ, TMPDIR=str(tmp_path))
    first = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    kept = out / ".zoo-runs" / "torchvision"
    files = [kept / zoo.kept_file(s) for s in specs]
    assert all(f.exists() for f in files), sorted(os.listdir(kept))
    table = (out / "zoo.md").read_bytes()
    # their rows, explained by this code, would be taken as they are: the runs files alone here
    (kept / "rows.jsonl").unlink()

    malformed = json.loads(gzip.decompress(files[0].read_bytes()))
    malformed["runs"]["fields"]["native"] = {"$record": "NativeCount", "fields": {"model": 1}}
    files[0].write_bytes(gzip.compress(json.dumps(malformed).encode()))
    marker = tmp_path / "marker"
    key_hang = json.loads(gzip.decompress(files[1].read_bytes()))["key"]
    planted = gzip.compress(pickle.dumps({"key": key_hang, "runs": _Marker(str(marker))}))
    files[1].write_bytes(planted)
    files[2].unlink()
    old = kept / (files[2].name[: -len(zoo.KEPT_SUFFIX)] + zoo.OLD_KEPT_SUFFIX)
    old.write_bytes(planted)

    again = subprocess.run([*args, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert not marker.exists()
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr and "(kept from an earlier run)" not in again.stdout
    notes = [line for line in again.stderr.splitlines() if "running it again" in line]
    assert len(notes) == 3, again.stderr
    assert "is not valid (its result does not read back" in notes[0]
    assert "is not valid (not JSON" in notes[1]
    assert "old pickle format, which is never loaded" in notes[2]
    assert (out / "zoo.md").read_bytes() == table  # all three counted again, the same
    assert all(f.exists() for f in files)  # and kept anew, in the new format
    assert zoo.load_runs(files[1], key_hang) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing left in the temporary folder


def test_zoo_models_are_names_of_the_source_unless_prefixed():
    """``zoo --source timm --models resnet50`` ran torchvision's resnet50 (a bare name was
    resolved as in ``report``, where it is torchvision's) and then failed on vit_base_patch16_224,
    which torchvision has not: a bare name is one of --source; a prefix or a callable is kept."""
    assert zoo.names_for("timm", "all", "resnet50,vit_base_patch16_224,resnet50") == [
        "timm:resnet50", "timm:vit_base_patch16_224"]
    assert zoo.names_for("timm", "all", "timm:resnet18,hf:BertModel,tests.fault_models:good") == [
        "timm:resnet18", "hf:BertModel", "tests.fault_models:good"]
    assert zoo.names_for("torchvision", "all", "resnet50") == ["resnet50"]
    assert zoo.names_for("transformers", "all", "BertModel") == ["hf:BertModel"]


def test_every_version_in_a_rows_key_is_pinned_and_installed_as_pinned():
    """A kept row is reused only for the same installed versions (``zoo.run_key``). pandas is in
    the key (torchstat's totals are a pandas frame's sums) and was let float (``pandas>=3,<4``)
    until 2026-12-07, when pandas 3.1.2 appeared: on a freshly set-up machine ``--resume`` then
    found none of the 1,339 committed whole-timm rows and would have counted them all again. So
    every distribution of the key but reconcile itself is pinned with ``==`` by ``pyproject.toml``
    (or the Makefile's ``--no-deps`` line, mmengine), and the set-up installed that version."""
    import re
    import tomllib
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values()
                                                for r in extra)]
    requirements += re.findall(r"^[A-Z]+ := ([\w.-]+==[\w.+-]+)$", (ROOT / "Makefile").read_text(), re.M)
    pins = {canonicalize_name(r.name): str(r.specifier) for r in map(Requirement, requirements)}
    keyed = [d for d in zoo._versioned() if d != "reconcile"]
    assert "pandas" in keyed and "torch" in keyed and "mmengine" in keyed
    spec = {d: pins.get(canonicalize_name(d), "(not listed)") for d in keyed}
    floating = {d: s for d, s in spec.items() if not s.startswith("==")}
    assert not floating, f"in a zoo row's key but not pinned exactly: {floating}"
    for dist in keyed:
        assert Version(metadata.version(dist)) == Version(spec[dist][2:]), dist


@pytest.mark.slow
def test_zoo_resumes_from_rows_alone_and_reruns_a_cut_line(tmp_path):
    """The whole timm zoo outlasts a sitting here, and its kept runs (about 40 KB a model) are too
    big to carry over; its rows (``zoo_rows``) are not. A first run keeps a row per model in
    rows.jsonl; with every kept runs file gone and the last line cut short (a kill mid-write),
    ``--resume`` takes the first model from its row (no tool runs), notes the cut line and runs
    the second again: the same page, byte for byte, and the row kept anew."""
    from reconcile import zoo_rows

    specs = ["tests.fault_models:good", "tests.fault_models:sys_exit"]
    out = tmp_path / "out"
    args = [sys.executable, "-m", "reconcile", "zoo", "--models", ",".join(specs), "--tools", "native,thop",
            "--timeout", "120", "--out", str(out)]
    env = dict(os.environ, TMPDIR=str(tmp_path))
    first = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    kept = out / ".zoo-runs" / "torchvision"
    page, picture = (out / "zoo.md").read_bytes(), (out / "zoo.png").read_bytes()
    lines = (kept / zoo_rows.ROWS_FILE).read_text().splitlines()
    order = [json.loads(line)["key"]["spec"] for line in lines]  # one line a model, in the order they finished
    assert sorted(order) == sorted(specs)
    specs = order  # the first line's model is taken from its row below, the cut second line's runs again
    for spec in specs:
        (kept / zoo.kept_file(spec)).unlink()
    (kept / zoo_rows.ROWS_FILE).write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])

    again = subprocess.run([*args, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    (cut,) = [line for line in again.stderr.splitlines() if "rows.jsonl line" in line]
    assert cut.startswith(f"reconcile: {kept}: rows.jsonl line 2 is not a valid row (not JSON (") and cut.endswith(": skipped")
    said = {spec: line for line in again.stdout.splitlines() for spec in specs if f"] {spec}:" in line}
    assert said[specs[0]].endswith("(kept from an earlier run)") and "kept" not in said[specs[1]]
    assert not (kept / zoo.kept_file(specs[0])).exists() and (kept / zoo.kept_file(specs[1])).exists()
    assert (out / "zoo.md").read_bytes() == page and (out / "zoo.png").read_bytes() == picture
    rows, notes = zoo_rows.read_rows(kept)
    # --resume rewrote the file one line per model before it ran (the cut line went), then the
    # model counted again appended its row
    assert sorted(rows) == sorted(specs) and notes == []
    assert len((kept / zoo_rows.ROWS_FILE).read_text().splitlines()) == 2


def test_a_row_reads_back_and_a_bad_line_never_does():
    from fractions import Fraction

    from reconcile.zoo_rows import PageRow, Share, ToolCell, parse_line, row_line

    row = PageRow("timm:x", "1x3x8x8", 3888, 112, (ToolCell("thop", Share(3, 3, "ok"), Fraction(3888)),
                                                   ToolCell("torchstat", Share(0, 0, "failed"), None),
                                                   ToolCell("odd", Share(1, 2, "ok"), Fraction(7, 2)),
                                                   ToolCell("off", Share(311, 312, "ok", Fraction(49, 100)),
                                                            Fraction(4691133832))),
                  ("torchstat: `ValueError`: no",))
    key = {"spec": "timm:x", "tools": ["thop"], "timeout": 600.0, "versions": {"torch": "2"}}
    assert parse_line(row_line(key, row)) == (key, row)
    good = json.loads(row_line(key, row))
    for bad, why in [(dict(good, macs="3888"), "macs is not an integer"),
                     (dict(good, macs=True), "macs is not an integer"),
                     (dict(good, tools=[["thop", "ok", 3, 3, 3888]]), "a total is not an exact number"),
                     (dict(good, tools=[["thop", "ok", 3, 3, "__import__('os')"]]), "a total is not an exact number"),
                     (dict(good, tools=[["thop", "ok", 3]]), "a tool cell"),
                     (dict(good, tools=[["thop", "ok", 3, 3, "3888", "0"]]), "not a positive ratio"),
                     (dict(good, tools=[["thop", "ok", 3, 3, "3888", None]]), "not a positive ratio"),
                     (dict(good, extra=1), "not a zoo row"),
                     ({k: v for k, v in good.items() if k != "key"}, "not a zoo row")]:
        with pytest.raises(ValueError, match=why):
            parse_line(json.dumps(bad))
    with pytest.raises(ValueError, match="not JSON"):
        parse_line('{"key": NaN}')
    # a cell says how much of the tool's total its residual is, not only how many rows it is in
    assert [c.share.text() for c in row.tools] == ["100% (3)", "failed", "50% (1/2)",
                                                   "99% (311/312; 49% of its total unexplained)"]
    assert Share(1, 2, "ok", Fraction(3, 100_000)).text() == "50% (1/2; 0.003% of its total unexplained)"
    assert Share(1, 2, "ok", Fraction(12, 5)).text() == "50% (1/2; 240% of its total unexplained)"
    # the code that explained it: read back; a row from before rows named it reads as ""
    coded = dataclasses.replace(row, code="0123456789ab")
    assert parse_line(row_line(key, coded)) == (key, coded)
    assert "code" not in json.loads(row_line(key, row)) and parse_line(row_line(key, row))[1].code == ""
    with pytest.raises(ValueError, match="its code is not a fingerprint"):
        parse_line(json.dumps(dict(good, code="../x")))


def test_rows_of_other_code_are_named_on_the_page_and_counted_again_on_request(tmp_path, capsys):
    """A kept row says which reconcile code explained it (``code_version``): reconcile's version
    does not change with each fix, so a resumed zoo's page could mix rows of several codes
    unseen. The page names the rows of other code; ``--recount-earlier`` runs those models again;
    ``--resume`` first rewrites rows.jsonl one line per model."""
    from reconcile import cli, zoo_rows
    from reconcile._version import code_version

    spec = "tests.fault_models:good"
    args = ["zoo", "--models", spec, "--tools", "native,thop", "--timeout", "120", "--out", str(tmp_path)]
    assert cli.main(args) == 0
    kept = tmp_path / ".zoo-runs" / "torchvision"
    (line,) = (kept / zoo_rows.ROWS_FILE).read_text().splitlines()
    assert json.loads(line)["code"] == code_version()
    assert "other reconcile code" not in (tmp_path / "zoo.md").read_text()
    # a row this code explained is taken as it is: its runs, which would give it again, are not
    # read (a second a model, with the workers idle), so a runs file that does not read back is
    # never met
    (kept / zoo.kept_file(spec)).write_bytes(b"not a runs file")
    capsys.readouterr()
    assert cli.main([*args, "--resume"]) == 0
    out, err = capsys.readouterr()
    assert "(kept from an earlier run)" in out and err == ""
    # the row as an earlier code wrote it, twice (a model explained anew appends a line), no kept runs
    (kept / zoo.kept_file(spec)).unlink()
    old = json.dumps(dict(json.loads(line), code="000000000000"))
    (kept / zoo_rows.ROWS_FILE).write_text(old + "\n" + old + "\n")
    capsys.readouterr()
    assert cli.main([*args, "--resume"]) == 0
    assert "(kept from an earlier run)" in capsys.readouterr().out
    lines = (kept / zoo_rows.ROWS_FILE).read_text().splitlines()
    assert [json.loads(x) for x in lines] == [json.loads(old)]  # one line per model again
    page = (tmp_path / "zoo.md").read_text()
    assert "## Rows explained by other reconcile code" in page
    assert "it explained 0 of the 1 rows" in page and f"- `000000000000` (1): {spec}" in page
    assert cli.main([*args, "--resume", "--recount-earlier"]) == 0
    assert "kept" not in capsys.readouterr().out  # counted again
    rows, _ = zoo_rows.read_rows(kept)
    assert rows[spec][1].code == code_version()
    assert "other reconcile code" not in (tmp_path / "zoo.md").read_text()
    assert cli.main([*args, "--recount-earlier"]) == 2
    assert capsys.readouterr().err == ("reconcile: error: --recount-earlier says which kept rows --resume may not "
                                       "reuse: add --resume\n")


def test_a_model_whose_explanation_fails_is_one_line_and_the_zoo_goes_on(tmp_path, monkeypatch, capsys):
    """A bug in reconcile's explanation of one model (timm's mvitv2 made the torchscan convention
    raise KeyError) was a traceback that ended a whole-timm run after hours: now the model is one
    error line, its runs stay kept for --resume (which explains them again), the rest go on."""
    from reconcile import cli, zoo_rows

    bad, good = "tests.fault_models:good", "tests.fault_models:sys_exit"
    real = pipeline.reconcile_model

    def fails_on_bad(mr):
        if mr.name == bad:
            raise KeyError("kernel_size")
        return real(mr)

    monkeypatch.setattr(pipeline, "reconcile_model", fails_on_bad)
    out = tmp_path / "out"
    assert cli.main(["zoo", "--models", f"{bad},{good}", "--tools", "native,thop", "--timeout", "120",
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("reconcile: error:")]
    assert line == (f"reconcile: error: {bad}: explaining its runs failed, a bug in reconcile (KeyError: 'kernel_size'); "
                    "its runs are kept and --resume explains them again")
    assert "Traceback" not in err
    kept = out / ".zoo-runs" / "torchvision"
    assert (kept / zoo.kept_file(bad)).exists() and (kept / zoo.kept_file(good)).exists()
    rows, _ = zoo_rows.read_rows(kept)
    assert sorted(rows) == [good]  # no row for the model it could not explain
    assert f"| {good} |" in (out / "zoo.md").read_text()
    # fixed, --resume explains the kept runs again: both on the page, nothing run
    monkeypatch.setattr(pipeline, "reconcile_model", real)
    assert cli.main(["zoo", "--models", f"{bad},{good}", "--tools", "native,thop", "--timeout", "120",
                     "--out", str(out), "--resume"]) == 0
    said = capsys.readouterr().out
    assert said.count("(kept from an earlier run)") == 2, said


def test_a_zoo_counts_the_cheapest_models_first_and_pages_them_in_order(tmp_path, monkeypatch):
    """A whole-timm run outlasts a sitting here and was counted in the order of timm's list, its
    giants (samvit_huge, 2,982 GMACs) among the rest: cut short, it had counted fewer models than
    it could, and a part of 16 waited on its giant. Now the models run by published GMACs at
    their default input, the cheapest first, those with none published (a tag, an unknown name)
    last in their order; the page keeps the order given."""
    from reconcile import progress as progress_module
    from reconcile.config import RunConfig

    # published GMACs: alexnet 0.714, resnet18 1.814, vgg16 15.47 (torchvision's ``_ops``);
    # timm's table at 224 px: resnet18 1.82, resnet50 4.11; a tagged name and an unknown one: none
    names = ["vgg16", "timm:resnet50.a1_in1k", "timm:resnet50", "no_such_model", "resnet18", "alexnet",
             "timm:resnet18"]
    order = ["alexnet", "resnet18", "timm:resnet18", "timm:resnet50", "vgg16", "timm:resnet50.a1_in1k",
             "no_such_model"]
    assert zoo.cheapest_first(names) == order
    assert zoo.cheapest_first(["vgg16", "vgg16"]) == ["vgg16", "vgg16"]

    ran: list[str] = []

    def collect(part, cfg, *, on_done, on_start, on_model):
        for spec in part:
            ran.append(spec)
            on_model(pipeline.ModelRuns(spec, spec, inputs=(), native=None, error=f"{spec}: not run here"))
        return []

    monkeypatch.setattr(pipeline, "collect", collect)
    progress = progress_module.Progress(len(names), 1, lines=False)
    rows, errors, pending = zoo.run(names, RunConfig(tools=("native",)), tmp_path, "torchvision",
                                    resume_kept=False, progress=progress, note=print)
    progress.close()
    assert ran == order and pending == []
    assert [spec for spec, _ in errors] == names  # reported in the order given


def test_page_only_pages_what_is_kept_lists_the_rest_and_writes_nothing_kept(tmp_path, capsys):
    """A whole-timm run outlasts several sittings and wrote its page only once every model had a
    row: nothing to read or commit until then. ``--page-only`` counts nothing: it writes the page
    of what a run kept so far (explained by this code), says at the top that it is partial and
    lists the models not counted yet with their published GMACs; the kept folder is only read, so
    it can page a run that is still going."""
    from reconcile import cli, zoo_rows

    counted, plain = "tests.fault_models:good", "resnet18"
    out = tmp_path / "out"
    common = ["--tools", "native,thop", "--timeout", "120", "--out", str(out)]
    assert cli.main(["zoo", "--models", counted, *common]) == 0
    kept = out / ".zoo-runs" / "torchvision"
    before = {p.name: p.read_bytes() for p in kept.iterdir()}
    capsys.readouterr()
    assert cli.main(["zoo", "--models", f"{plain},{counted}", "--page-only", *common]) == 0
    said = capsys.readouterr().out
    assert said.count("(kept from an earlier run)") == 1
    assert said.endswith(f"wrote {out / 'zoo.md'} (.png); 1 of its 2 models not counted yet\n"), said
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == before  # only read
    page = (out / "zoo.md").read_text()
    assert ("**Not every model is counted yet**: rows for 1 of the 2 models; those not counted yet are listed at "
            "the end.") in page
    assert f"| {counted} |" in page and f"| {plain} |" not in page
    # resnet18's published GMACs: torchvision's _ops, 1.814
    assert page.endswith("## Not counted yet\n\n1 model, with the GMACs published where there are: "
                         "`reconcile zoo --resume` (same source, subset and tools) counts them, the cheapest "
                         f"first.\n\n{plain} (1.81)\n")
    rows, _ = zoo_rows.read_rows(kept)
    assert sorted(rows) == [counted]
    # a run that counts writes no such section
    assert cli.main(["zoo", "--models", counted, "--resume", *common]) == 0
    assert "Not counted yet" not in (out / "zoo.md").read_text()
    capsys.readouterr()
    for extra, why in ((["--resume", "--recount-earlier"], "--page-only counts nothing, --recount-earlier counts "
                        "kept rows again: use one of them"),
                       (["--published", "--source", "timm"], "--page-only writes the zoo page, --published "
                        "checks timm's table: use one of them")):
        assert cli.main(["zoo", "--models", counted, "--page-only", *extra, *common]) == 2
        assert capsys.readouterr().err == f"reconcile: error: {why}\n"
