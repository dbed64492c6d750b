"""Shell-like splitting of a command line: quotes, backslashes, ``#`` comments, ``;`` separators.

``virsh=True`` reads a line as virsh reads its one-argument command string (``virsh 'domstate
D; list'``: vshCommandStringGetArg in libvirt's tools/vsh.c), where that differs from sh: a line
break ends a command as ``;`` does, a backslash escapes any character inside double quotes too,
a backslash before a line break is dropped with it, a lone backslash at the end is refused
("dangling \\"), a single quote may stay open to the end, ``~`` is a plain character, and a
carriage return is part of a word.

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


def split_line(line: str, partial: bool = False, virsh: bool = False) -> Lexed:
    """Split a line into commands of words; raise UsageError on an open quote unless partial
    (``virsh``: as virsh splits its command string, see above)."""
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

    def end_command() -> None:
        nonlocal words
        end_word()
        result.commands.append(words)
        words = []

    def dangling() -> UsageError:
        return UsageError(
            "the line ends in a backslash that escapes nothing (virsh: dangling \\)",
            "write \\\\ for a backslash, or put it in single quotes",
        )

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
            elif ch == "\\" and virsh:  # virsh: any character, a line break dropped with it
                if i >= n:
                    raise dangling()
                if line[i] != "\n":
                    word.append(line[i])
                i += 1
            elif ch == "\\" and i < n and line[i] in '"\\$`':
                word.append(line[i])
                i += 1
            else:
                result.continues = ch == "\\" and i >= n
                word.append(ch)
            continue
        if virsh and ch == "\n":  # virsh: a line break ends the command, as ';' does
            end_command()
        elif ch in (" \t" if virsh else " \t\r\n"):
            end_word()
        elif ch == "#" and not in_word:
            if not virsh:
                break
            newline = line.find("\n", i)  # virsh: a comment ends at the line's end
            i = n if newline < 0 else newline + 1
            end_command()
        elif ch == ";":
            end_command()
        elif ch in "'\"":
            quote, in_word = ch, True
        elif ch == "\\" and virsh:
            if i >= n:
                raise dangling()
            if line[i] != "\n":  # a backslash and the line break after it are dropped
                word.append(line[i])
                in_word = True
            i += 1
        elif ch == "\\":
            in_word = True
            if i < n:
                word.append(line[i])
                i += 1
            else:
                result.continues = True
        elif ch == "~" and not (in_word or partial or virsh) and (i >= n or line[i] in "/ \t;"):
            word.append(os.path.expanduser("~"))  # as sh: an unquoted ~ or ~/... is $HOME
            in_word = True
        else:
            word.append(ch)
            in_word = True
    if quote and not partial and not (virsh and quote == "'"):  # virsh: ' may stay open
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
    if virsh:  # a command whose first word starts with '#' (quoted) is a comment to virsh
        result.commands = [c for c in result.commands if not c[0].startswith("#")]
    return result


def echoed(line: str) -> str:
    """``-x``'s echo of a script line: the commands it runs, each word quoted so that it reads
    back the same (its ``#`` comment is none of them; the script's leading ``-`` was taken off
    before, as guestfish's ``-x`` leaves it out)."""
    import shlex  # only -x echoes

    commands = [words for words in split_line(line, partial=True).commands if words]

    def shown(word: str) -> str:  # a pasted check's pipe is a pipe to vshx too (nu12 #10)
        return word if word == "|" else shlex.quote(word)

    return "+ " + "; ".join(" ".join(shown(word) for word in words) for words in commands)
