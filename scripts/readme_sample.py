"""Copy the top of reports/resnet18.md (title to the end of "Totals, and why they differ") into the
README between its sample markers. Run after `make report`; tests/test_reports.py checks it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- sample:begin -->", "<!-- sample:end -->"


def sample() -> str:
    text = (ROOT / "reports" / "resnet18.md").read_text()
    head = text.split("\n## Per-layer differences")[0].rstrip("\n")
    # the picture sits beside the report: seen from the README it is under reports/
    head = head.replace("](resnet18.png)", "](reports/resnet18.png)")
    # the report's own headings sit one level below the README's section
    return "\n".join("#" + line if line.startswith("#") else line for line in head.splitlines())


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    before, rest = text.split(BEGIN)
    _, after = rest.split(END)
    readme.write_text(f"{before}{BEGIN}\n{sample()}\n{END}{after}")


if __name__ == "__main__":
    main()
