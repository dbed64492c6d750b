"""Batch scripts (``vshx -f FILE`` / ``-f -``): one command per line, stop at the first failure.

As in guestfish, a line starting with ``-`` may fail without stopping the script, and ``-x``
echoes each command before it runs.  Lines are split by vshx's own lexer; no shell is run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from vshx.errors import EXIT_FAILED, EXIT_OK, VshxError
from vshx.shell.session import ExitRequested, Session


def run_lines(session: Session, lines: Iterable[str], name: str, echo: bool = False) -> int:
    """Run script lines; return 0, or the status of the first failing line."""
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        may_fail = line.startswith("-")
        if may_fail:
            line = line[1:].lstrip()
        if echo:
            print(f"+ {line}", file=session.err)
        try:
            status = session.execute(line, where=f"{name}:{number}: ")
        except ExitRequested:
            return EXIT_OK
        if status != EXIT_OK and not may_fail:
            return status
    return EXIT_OK


def run_file(session: Session, path: str, echo: bool = False) -> int:
    if path == "-":
        return run_lines(session, sys.stdin, "<stdin>", echo)
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.readlines()
    except OSError as exc:
        session.report(VshxError(f"cannot read script {path!r}: {exc.strerror}"))
        return EXIT_FAILED
    return run_lines(session, lines, path, echo)
