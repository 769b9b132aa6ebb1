"""The one exception type for mistakes a user made or can fix.

Every message says what was wrong and what to do about it, on one line. The CLI prints it
without a traceback and exits with ``exit_code`` (2: bad input). Bugs in reconcile itself
raise ordinary exceptions and keep their traceback.
"""

from __future__ import annotations


class ReconcileError(Exception):
    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
