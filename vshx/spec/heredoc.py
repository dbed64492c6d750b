"""Here-documents in vshx lines: ``COMMAND ... <<'END'`` then body lines, then ``END``.

vshx prints ``virsh update-device D /dev/stdin --config <<'VSHX_EOF'`` in its scripts; a user who
pastes that into the REPL or a batch file gets the same: the body goes to the command's stdin.
Only the quoted or plain-word forms are read, and nothing in the body is expanded (as with a
quoted delimiter in sh).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from vshx.errors import UsageError
from vshx.spec import lexer

OPENER = re.compile(r"<<\s*(?:'([^']+)'|\"([^\"]+)\"|([A-Za-z0-9_]+))\s*$")


def opened(line: str) -> tuple[str, str] | None:
    """(the command part, the delimiter) when ``line`` ends by opening a here-document."""
    match = OPENER.search(line)
    if match is None:
        return None
    before = line[: match.start()]
    if lexer.split_line(before, partial=True).open_quote is not None:
        return None  # the << is inside a quoted word
    delimiter = next(group for group in match.groups() if group is not None)
    return before.rstrip(), delimiter


def read_body(delimiter: str, next_line: Callable[[], str | None]) -> str:
    """The lines up to the one that is exactly ``delimiter``; an unended body is an error."""
    body: list[str] = []
    while True:
        line = next_line()
        if line is None:
            raise UsageError(
                f"the here-document is not ended by a line {delimiter}",
                f"end it with a line holding only {delimiter}",
            )
        line = line.rstrip("\r\n")  # a script saved with CRLF line ends too
        if line == delimiter:
            return "".join(f"{text}\n" for text in body)
        body.append(line)
