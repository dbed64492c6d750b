"""glibc's getopt_long, as a program that uses it reads its words: which options they give.

To know what a pasted ``qemu-img`` line will do, vshx must read its words exactly as
qemu-img's getopt_long will: an unambiguous prefix of a long option is that option
(``--rep`` is ``--repair``), ``--opt=value`` and ``--opt value`` both give the value, short
options cluster (``-Urall`` is ``-U -r all``), options may follow operands (GNU permutes),
and ``--`` ends the options.  Anything getopt_long would reject (unknown or ambiguous, a
missing or unexpected value) comes back as None: the program stops with an error there, and
vshx, which cannot say more, treats the line as one that may change things.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LongOption:
    """One entry of a ``struct option`` table: ``val`` is what getopt_long returns for it."""

    name: str
    takes_value: bool
    val: str


@dataclass(frozen=True)
class Parsed:
    """The options in order, as (val, value or None), and the operands."""

    options: tuple[tuple[str, str | None], ...]
    operands: tuple[str, ...]


def short_table(optstring: str) -> dict[str, bool]:
    """``"hf:r:"`` -> {h: no value, f: value, r: value}; a leading ``:``/``+`` is a mode."""
    table: dict[str, bool] = {}
    letters = optstring.lstrip(":+-")
    for i, letter in enumerate(letters):
        if letter == ":":
            continue
        table[letter] = letters[i + 1 : i + 2] == ":"
    return table


def resolve_long(name: str, table: Sequence[LongOption]) -> LongOption | None:
    """The option a ``--name`` means: the exact name, else the one option it is a prefix of
    (several count as one when they agree on value and meaning, as in glibc); None when none
    or an ambiguous several."""
    for option in table:
        if option.name == name:
            return option
    found: LongOption | None = None
    for option in table:
        if option.name.startswith(name):
            if found is None:
                found = option
            elif (found.takes_value, found.val) != (option.takes_value, option.val):
                return None  # ambiguous
    return found


def parse(args: Sequence[str], optstring: str, table: Sequence[LongOption]) -> Parsed | None:
    """``args`` (the words after the program's command name) as getopt_long reads them, or
    None where getopt_long reports an error."""
    shorts = short_table(optstring)
    permute = not optstring.startswith("+")
    options: list[tuple[str, str | None]] = []
    operands: list[str] = []
    words = list(args)
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            operands.extend(words[i:])
            break
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            option = resolve_long(name, table)
            if option is None:
                return None
            if eq:
                if not option.takes_value:
                    return None
                options.append((option.val, value))
            elif option.takes_value:
                if i >= len(words):
                    return None
                options.append((option.val, words[i]))
                i += 1
            else:
                options.append((option.val, None))
            continue
        if word.startswith("-") and word != "-":
            letters = word[1:]
            j = 0
            while j < len(letters):
                letter = letters[j]
                j += 1
                if letter not in shorts:
                    return None
                if not shorts[letter]:
                    options.append((letter, None))
                    continue
                if j < len(letters):
                    options.append((letter, letters[j:]))
                elif i < len(words):
                    options.append((letter, words[i]))
                    i += 1
                else:
                    return None
                break
            continue
        operands.append(word)
        if not permute:
            operands.extend(words[i:])
            break
    return Parsed(tuple(options), tuple(operands))
