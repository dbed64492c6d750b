"""Shell-like splitting of a command line: quotes, backslashes, ``#`` comments, ``;`` separators.

Written here rather than with :mod:`shlex` because a ``#`` inside a word (``disk#1.qcow2``) is
part of the word, as in sh, and because completion needs to know whether the last word is
still open and in which quote.  As in sh, an unquoted leading ``~`` (``~``, ``~/x``) is the
home directory (completion sees the ``~`` as typed).  Nothing here ever runs a shell.
"""

from __future__ import annotations

import os

from vshx.errors import UsageError


class Lexed:
    """The commands of a line, plus the state at its end (for completion)."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []
        self.open_quote: str | None = None  # quote still open at end of line
        self.ends_in_word = False  # the last word touches the end of the line (being typed)
        self.last_word_start = 0  # offset in the line where the word being typed begins
        # the line ends in a backslash that escapes the line break after it (unquoted or in
        # double quotes, not in a comment): sh joins the next line to it, both removed
        self.continues = False


def split_line(line: str, partial: bool = False) -> Lexed:
    """Split a line into commands of words; raise UsageError on an open quote unless partial."""
    result = Lexed()
    words: list[str] = []
    word: list[str] = []
    in_word = False
    quote: str | None = None
    i = 0
    n = len(line)

    word_start = 0

    def end_word() -> None:
        nonlocal word, in_word
        if in_word:
            words.append("".join(word))
        word, in_word = [], False

    while i < n:
        ch = line[i]
        if not in_word and quote is None:
            word_start = i
        i += 1
        if quote == "'":
            if ch == "'":
                quote = None
            else:
                word.append(ch)
            continue
        if quote == '"':
            if ch == '"':
                quote = None
            elif ch == "\\" and i < n and line[i] in '"\\$`':
                word.append(line[i])
                i += 1
            else:
                result.continues = ch == "\\" and i >= n
                word.append(ch)
            continue
        if ch in " \t\r\n":
            end_word()
        elif ch == "#" and not in_word:
            break
        elif ch == ";":
            end_word()
            result.commands.append(words)
            words = []
        elif ch in "'\"":
            quote, in_word = ch, True
        elif ch == "\\":
            in_word = True
            if i < n:
                word.append(line[i])
                i += 1
            else:
                result.continues = True
        elif ch == "~" and not in_word and not partial and (i >= n or line[i] in "/ \t;"):
            word.append(os.path.expanduser("~"))  # as sh: an unquoted ~ or ~/... is $HOME
            in_word = True
        else:
            word.append(ch)
            in_word = True
    if quote and not partial:
        raise UsageError(f"unterminated {quote} quote", "close the quote")
    result.open_quote = quote
    result.ends_in_word = in_word and i >= n
    result.last_word_start = word_start if result.ends_in_word else n
    end_word()
    result.commands.append(words)
    last = result.commands[-1]
    result.commands = [c for c in result.commands[:-1] if c]
    if last or partial:
        result.commands.append(last)
    return result
