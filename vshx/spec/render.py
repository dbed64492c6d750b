"""How the shell shows things: virsh-style tables, escaped text, and JSON for scripts."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping


def _is_byte(ch: str) -> bool:
    """A byte that is not UTF-8, as Python holds it in a name (``os.fsdecode``'s surrogate
    escape: byte 0xff is U+DCFF)."""
    return 0xDC80 <= ord(ch) <= 0xDCFF


def printable(text: str) -> str:
    """``text`` on one line: control characters (a newline in a file name) shown escaped, and
    a byte that is not UTF-8 (held as a surrogate escape, as Python reads names) as ``\\xff``.
    A name inside a message is quoted with :func:`quoted`, which shows it the same way."""
    return "".join(
        ch
        if ch.isprintable() or ch == " "
        else f"\\x{ord(ch) - 0xDC00:02x}"
        if _is_byte(ch)
        else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


def quoted(name: str) -> str:
    """A name inside a message (a file, path, domain, snapshot, disk or layer), in quotes.

    The text is ``repr(name)`` for every ordinary name (``'base.qcow2'``; ``"it's"``; a
    backslash doubled; a control character escaped as :func:`printable` escapes it,
    ``'a\\nb'``), so messages keep their wording, except that a byte that is not UTF-8 (held
    as a surrogate escape) is shown as ``\\xff``, where ``repr`` would write ``\\udcff``.
    Write ``f"domain {quoted(name)} not found"`` where ``{name!r}`` would be.
    """
    quote = '"' if "'" in name and '"' not in name else "'"  # repr's choice
    return (
        quote
        + "".join(
            f"\\x{ord(ch) - 0xDC00:02x}"
            if _is_byte(ch)
            else "\\" + ch
            if ch == quote
            else repr(ch)[1:-1]
            for ch in name
        )
        + quote
    )


def comment(text: str) -> str:
    """The one escaper for ``#`` lines: ``text`` as one comment line that sh never runs.

    A newline (or any other control character, ``\\r``, U+2028 ...) would end the comment and
    start a command; each is shown escaped instead.  Every ``#`` line vshx prints into a
    script (notes, tables, verdicts, before/after, echoed output) is made here.
    """
    return f"# {printable(text)}"


def comments(lines: str | Iterable[str]) -> str:
    """Several ``#`` lines (a table, a command's output), each through :func:`comment`;
    ``lines`` may be one text (split at its line ends) or a list of lines."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    return "".join(comment(line) + "\n" for line in lines)


def table(rows: list[list[str]], header: list[str], headed: bool = True) -> str:
    """A virsh-style table: a header, a rule, left-aligned columns; a control character in a
    cell (a newline in a snapshot name) is shown escaped, so each row stays one line.
    ``headed`` False: the rows alone, as wide as they need (virsh -q)."""
    rows = [[printable(str(cell)) for cell in row] for row in rows]
    sized = [header, *rows] if headed else rows
    widths = [max((len(str(r[i])) for r in sized), default=0) for i in range(len(header))]
    fmt = " " + "   ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header).rstrip(), "-" * (sum(widths) + 3 * len(widths))] if headed else []
    lines += [fmt.format(*r).rstrip() for r in rows]
    return "\n".join(lines)


JSON_SCHEMA = 1
"""The number every ``--json`` document carries as ``"schema"``; a change of shape bumps it
(a field removed, renamed, or given another type or meaning; a field added does not)."""


def to_json(document: Mapping[str, object]) -> str:
    """The one writer of ``--json`` output: ``document``, an object, with ``"schema"`` first.

    Each command's fields and their types are in docs/json/COMMAND.schema.json; "none" is
    ``null``, never ``"-"`` or ``""``.  The text is UTF-8: a byte of a file name that is not
    UTF-8 (held as a surrogate escape, as ``os.fsdecode`` reads it) is written as the JSON
    escape of that surrogate (``\\xff`` as ``"\\udcff"``), which a JSON reader gives back
    as the same string, so ``os.fsencode`` of it is the file's name again.
    """
    import json  # only --json pays for it

    text = json.dumps({"schema": JSON_SCHEMA, **document}, indent=2, ensure_ascii=False)
    return _LONE_SURROGATE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


# a surrogate can only stand in a JSON string (a key or a value), where its escape is valid
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
