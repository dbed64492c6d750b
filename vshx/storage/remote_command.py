"""The one place an argv list becomes a shell string: the command ``ssh`` hands the remote host.

ssh takes one command string and the remote user's login shell splits it again, so every
element is quoted by POSIX single-quote rules: ``'...'`` keeps every byte (space, newline,
``$()``, backquotes, ``"``, ``\\``, non-UTF-8 bytes, a leading ``-``) as it is, and a ``'`` inside
is written ``'\\''``.  Words made only of characters no POSIX shell treats specially are left
bare, so printed scripts stay readable.  This is the one documented exception to "argv lists
only": nothing else in vshx builds a command string.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# the characters of shlex's "safe" words (ASCII only): no shell gives any of them a meaning
_BARE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def quote(word: str) -> str:
    """``word`` as one POSIX shell word (surrogate-escaped bytes stay the bytes they were)."""
    if _BARE.fullmatch(word):
        return word
    return "'" + word.replace("'", "'\\''") + "'"


def command_string(argv: Sequence[str]) -> str:
    """``argv`` as one shell command line that runs exactly that argv (``sh -c`` semantics)."""
    if not argv:
        raise ValueError("an empty argv is no command")
    return " ".join(quote(word) for word in argv)
