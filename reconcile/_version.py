"""The version of reconcile, in a module that imports nothing, so that any layer can read it
without importing the package root (which imports the conventions, explain and roofline)."""

__version__ = "0.1.0"


def code_version() -> str:
    """A fingerprint of reconcile's own code (every ``.py`` file of the package and its tool table,
    by path and content): 12 hex digits, the same on every machine for the same code. A zoo row
    carries the one that explained it, since ``__version__`` does not change with each fix."""
    global _CODE
    if _CODE is None:
        import hashlib
        from pathlib import Path

        root = Path(__file__).resolve().parent
        h = hashlib.sha256()
        for f in sorted([*root.rglob("*.py"), root / "tool_versions.toml"]):
            if f.is_file() and "__pycache__" not in f.parts:
                h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
        _CODE = h.hexdigest()[:12]
    return _CODE


_CODE: str | None = None
