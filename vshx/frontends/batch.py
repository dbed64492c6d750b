"""Batch scripts (``vshx -f FILE`` / ``-f -``): one command per line, stop at the first failure.

As in guestfish, a line starting with ``-`` may fail without stopping the script, and ``-x``
echoes each command before it runs.  A line may open a here-document (``<<'END'``), as the
update-device lines vshx prints do.  Lines are split by vshx's own lexer; no shell is run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator

from vshx.errors import EXIT_FAILED, EXIT_OK, ExitRequested, VshxError
from vshx.shell.session import Session
from vshx.spec import heredoc
from vshx.spec.lexer import echoed, split_line
from vshx.spec.render import comment, quoted


def run_lines(session: Session, lines: Iterable[str], name: str, echo: bool = False) -> int:
    """Run script lines; return 0, or the status of the first failing line.

    The whole script is read first: a line that cannot be read (an unended quote or
    here-document) stops it before any line has run.  A script with merge lines runs them
    as frontends/batch_overlap.py says (their jobs overlap), with the same output and stops."""
    try:
        commands = list(_commands(lines, name))
    except _Unreadable as unreadable:
        session.report(unreadable.error, unreadable.where)
        return unreadable.error.exit_code
    from vshx.frontends import batch_overlap
    from vshx.frontends.gathered import run_gathered

    if batch_overlap.may_overlap(session) and any(
        batch_overlap.overlaps(session, line, stdin) for _w, line, stdin, _f in commands
    ):  # merge lines: their block jobs may run side by side (plans/overlap.py)
        return batch_overlap.run_overlapped(session, commands, echo)
    return run_gathered(session, lambda: _run_each(session, commands, echo))


def _run_each(
    session: Session, commands: list[tuple[str, str, str | None, bool]], echo: bool
) -> int:
    """The lines one after the other: 0, or the status of the first that fails."""
    for where, line, stdin, may_fail in commands:
        if echo:  # after what the lines before printed, and before what this one prints
            session.out.flush()
            print(echoed(line), file=session.err, flush=True)
        session.reported_at = None
        if may_fail and session.dry_run and not session.plan_json:  # atk13 F2: sh -e stops there
            session.out.write(
                comment(
                    f"{where}the next plan's line may fail ('-'): where it fails, vshx -f goes "
                    "on with the next line; sh -e stops"
                )
                + "\n"
            )
        try:
            status = session.execute(line, where=where, stdin=stdin)
        except ExitRequested:
            return EXIT_OK
        if status != EXIT_OK and not may_fail:
            said_where(session, where, line, status)
            return status
    return EXIT_OK


def said_where(session: Session, where: str, line: str, status: int) -> None:
    """vshx's own errors carry FILE:LINE; a passed-through virsh or qemu-img line's error is
    the tool's own: say which line it was, and that the script stops there."""
    if session.reported_at is not None:
        return  # vshx said what failed on this line itself, with FILE:LINE
    commands = split_line(line).commands  # it ran: it can be read
    what = commands[0][0] if len(commands) == 1 else "a command of this line"
    session.report(
        VshxError(
            f"{what} failed (exit {status}): the lines after this one were not run",
            "fix it and run the script again; a line that starts with '-' may fail",
        ),
        where,
    )


def _commands(lines: Iterable[str], name: str) -> Iterator[tuple[str, str, str | None, bool]]:
    """(where, line, here-document, may fail) of each command; a quoted word may span lines,
    as the quoted names vshx prints do when they hold a line break, and a backslash before
    the line break continues the line, as in sh."""
    numbered = enumerate((raw.rstrip("\r\n") for raw in lines), 1)
    for number, raw in numbered:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{name}:{number}: "
        piece = raw  # the script's last line read into this command
        while True:
            lexed = split_line(line, partial=True)
            # as in sh, a backslash right before the line break (unquoted or in double
            # quotes) joins the next line to this one, both removed
            continues = lexed.continues and piece.endswith("\\")
            if lexed.open_quote is None and not continues:
                break
            more = next(numbered, None)
            if more is None:
                if lexed.open_quote is None:  # the script ends in the backslash
                    line = line[:-1]
                    break
                try:
                    split_line(line)  # raises: the quote never ends
                except VshxError as exc:
                    raise _Unreadable(where, exc) from exc
            else:
                piece = more[1]
                line = line[:-1] + piece if continues else f"{line}\n{piece}"
        may_fail = line.startswith("-")
        if may_fail:
            line = line[1:].lstrip()
        stdin = None
        opener = heredoc.opened(line)
        if opener is not None:
            line, delimiter = opener
            try:
                stdin = heredoc.read_body(delimiter, lambda: next(numbered, (0, None))[1])
            except VshxError as exc:
                raise _Unreadable(where, exc) from exc
        yield where, line, stdin, may_fail


class _Unreadable(Exception):
    """A script line that cannot be read, and where it is."""

    def __init__(self, where: str, error: VshxError) -> None:
        super().__init__(error.message)
        self.where, self.error = where, error


def run_file(session: Session, path: str, echo: bool = False) -> int:
    """Run the script at ``path`` (``-``: stdin).  Its bytes are read as the command line's
    are (UTF-8, a byte that is not UTF-8 kept as itself: surrogate escapes), so a printed plan
    naming such a file runs here as under sh."""
    if path == "-":
        text = sys.stdin.buffer.read().decode("utf-8", "surrogateescape")
        return run_lines(session, text.splitlines(), "<stdin>", echo)
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            lines = handle.readlines()
    except OSError as exc:
        session.report(
            VshxError(
                f"cannot read script {quoted(path)}: {exc.strerror}",
                "check the file's path and that you may read it; -f - reads the script from stdin",
            )
        )
        return EXIT_FAILED
    return run_lines(session, lines, path, echo)
