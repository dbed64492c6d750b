"""Batch scripts (``vshx -f FILE`` / ``-f -``): one command per line, stop at the first failure.

As in guestfish, a line starting with ``-`` may fail without stopping the script, and ``-x``
echoes each command before it runs.  A line may open a here-document (``<<'END'``), as the
update-device lines vshx prints do.  Lines are split by vshx's own lexer; no shell is run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from vshx.errors import EXIT_FAILED, EXIT_OK, ExitRequested, VshxError
from vshx.shell.session import Session
from vshx.spec import heredoc


def run_lines(session: Session, lines: Iterable[str], name: str, echo: bool = False) -> int:
    """Run script lines; return 0, or the status of the first failing line."""
    numbered = enumerate(lines, 1)
    for number, raw in numbered:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        may_fail = line.startswith("-")
        if may_fail:
            line = line[1:].lstrip()
        if echo:
            print(f"+ {line}", file=session.err)
        where = f"{name}:{number}: "
        stdin = None
        opener = heredoc.opened(line)
        if opener is not None:
            line, delimiter = opener
            try:
                stdin = heredoc.read_body(delimiter, lambda: next(numbered, (0, None))[1])
            except VshxError as exc:
                session.report(exc, where)
                return exc.exit_code
        try:
            status = session.execute(line, where=where, stdin=stdin)
        except ExitRequested:
            return EXIT_OK
        if status != EXIT_OK and not may_fail:
            return status
    return EXIT_OK


def run_file(session: Session, path: str, echo: bool = False) -> int:
    if path == "-":
        data = sys.stdin.buffer.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            session.report(
                VshxError("the script on stdin is not UTF-8 text", "vshx scripts are UTF-8")
            )
            return EXIT_FAILED
        return run_lines(session, text.splitlines(), "<stdin>", echo)
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.readlines()
    except OSError as exc:
        session.report(VshxError(f"cannot read script {path!r}: {exc.strerror}"))
        return EXIT_FAILED
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        session.report(
            VshxError(
                f"{path}:{line}: the script is not UTF-8 text (byte 0x{exc.object[exc.start]:02x})",
                "save the script as UTF-8 text",
            )
        )
        return EXIT_FAILED
    return run_lines(session, lines, path, echo)
