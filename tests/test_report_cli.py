"""`reconcile report` on bad input: one clear line, exit code 2, nothing half-written, and the
other models of the same run still reported. Run as a real command in a fresh process (the
worker fork server then starts in the user's folder, as it does for users)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

USERNETS = textwrap.dedent("""
    import torch
    from torch import nn

    class Good(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x)

    class Broken(nn.Module):
        def forward(self, x):
            raise ValueError("this forward always fails")
""")


def reconcile(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reconcile", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_a_model_every_tool_fails_on_does_not_stop_the_others(tmp_path):
    (tmp_path / "usernets.py").write_text(USERNETS)
    proc = reconcile(tmp_path, "report", "usernets:Broken,nosuchmodel,usernets:Good", "--input-shape", "1,4",
                     "--tools", "thop,fvcore", "--out", "out")
    assert proc.returncode == 2
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 2 and "Traceback" not in proc.stderr
    assert "this forward always fails" in errors[0]
    assert "nosuchmodel" in errors[1]
    out = tmp_path / "out"
    # Good: Linear(4, 3) on 1x4 = 12 MACs, reported whole; nothing of Broken; no temporary files
    assert sorted(p.name for p in out.iterdir()) == ["index.md", "usernets_Good.csv", "usernets_Good.json",
                                                     "usernets_Good.md"]
    assert "12 MAC" in (out / "usernets_Good.md").read_text()
    assert "Broken" not in (out / "index.md").read_text()


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = reconcile(tmp_path, "report", "squeezenet1_1", "--out", str(blocker / "reports"))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "reports" in proc.stderr
    assert blocker.read_text() == "not a folder"
