"""The two kinds of failure a user can cause, mapped to virsh-like exit codes."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class VshxError(Exception):
    """A command failed for a reason the user can act on (exit 1).

    Printed as ``error: <message>`` and, when given, ``hint: <hint>``; never as a traceback.
    """

    exit_code = EXIT_FAILED

    def __init__(self, message: str, hint: str | None = None, *, clean: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.clean = clean  # raised by a step that left everything as it was before it


class UsageError(VshxError):
    """The command line itself is wrong: unknown option, missing argument, bad value (exit 2)."""

    exit_code = EXIT_USAGE


class ExitRequested(Exception):
    """Raised by the exit command; front ends stop reading lines."""
