"""Command specs: the one declaration of a command that parsing, help and completion all read.

A command lists its options once.  Options marked ``positional`` may also be given by
position, in declaration order, as virsh allows (``commit demo vda`` == ``commit --domain demo
--path vda``).  The same walker serves running (strict) and completing (partial, silent).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from vshx.errors import UsageError
from vshx.spec.render import quoted


class Opt(NamedTuple):
    """One argument or option of a command (a NamedTuple: dataclasses cost startup time)."""

    name: str
    help: str
    metavar: str | None = None  # None: a boolean flag
    positional: bool = False
    required: bool = False
    complete: str | None = None  # completer kind: domain, disk, layer, image, snapshot, uri
    convert: Callable[[str], Any] = str
    aliases: tuple[str, ...] = ()
    short: str | None = None
    excludes: tuple[str, ...] = ()
    implies: tuple[str, ...] = ()
    default: Any = None
    multiple: bool = False  # may be given more than once; the value is then a list
    needs: tuple[str, ...] = ()  # given only with at least one of these (virsh's --async)
    settle: Callable[[Any, Args], Any] | None = None  # the final value, once all are known

    @property
    def is_flag(self) -> bool:
        return self.metavar is None

    @property
    def key(self) -> str:
        return self.name.replace("-", "_")

    def spellings(self) -> tuple[str, ...]:
        names = tuple(f"--{n}" for n in (self.name, *self.aliases))
        return names + ((f"-{self.short}",) if self.short else ())


COMMON_OPTIONS: tuple[Opt, ...] = (
    Opt("dry-run", "print the plan as a shell script and change nothing"),
    Opt("teach", "print each step's equivalent virsh/qemu-img command as it runs"),
)


class Command(NamedTuple):
    """A command: its name, help, options and the function that runs it."""

    name: str
    help: str
    run: Callable[..., int | None]
    options: tuple[Opt, ...] = ()
    aliases: tuple[str, ...] = ()
    description: str = ""
    group: str = "general"
    common: bool = True  # accept --dry-run/--teach
    changes: bool = False  # changes domains or images: cached inventory is invalidated after it
    option_hints: tuple[tuple[str, str], ...] = ()  # (--unknown-option, what to do instead)
    # in a batch, its live block job may run while later lines on other domains and files
    # are checked and started (plans/overlap.py); it loads its target with load_target
    overlaps: bool = False
    # a batch --dry-run plans later lines on the chain its plan leaves (plans/target.py); False:
    # its plan changes more than that chain (snapshot metadata, vshx's record of moments),
    # so a later changing line cannot be planned after it and the dry run stops there
    predicted: bool = True

    @property
    def all_options(self) -> tuple[Opt, ...]:
        return self.options + (COMMON_OPTIONS if self.common else ())

    def option(self, spelling: str) -> Opt | None:
        for opt in self.all_options:
            if spelling in opt.spellings():
                return opt
        return None

    def usage(self) -> str:
        parts = [self.name]
        for opt in self.options:
            if opt.positional:
                word = f"<{opt.metavar or opt.name}>"
                if opt.metavar not in (None, opt.name):  # virsh: [--bandwidth] <number>
                    word = f"[--{opt.name}] {word}"
                parts.append(word if opt.required else f"[{word}]")
            elif opt.is_flag:
                parts.append(f"[--{opt.name}]")
            else:
                word = f"--{opt.name} <{opt.metavar}>"
                parts.append(word if opt.required else f"[{word}]")
        return " ".join(parts)


class Args(dict[str, Any]):
    """Parsed option values keyed by option key; attribute access for readability."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as exc:
            raise AttributeError(key) from exc


class PartialState:
    """Where a partially typed command line stands, for completion."""

    def __init__(self) -> None:
        self.given: set[str] = set()
        self.values: dict[str, str] = {}
        self.lists: dict[str, list[str]] = {}  # every value of a `multiple` option
        self.expecting_value_of: Opt | None = None
        self.next_positional: Opt | None = None
        self.after_double_dash = False


def _positionals(command: Command) -> list[Opt]:
    return [o for o in command.options if o.positional]


def _split_long(token: str) -> tuple[str, str | None]:
    if "=" in token:
        name, value = token.split("=", 1)
        return name, value
    return token, None


def walk(command: Command, tokens: Sequence[str], partial: bool = False) -> PartialState:
    """Assign tokens to options; raise UsageError on mistakes unless ``partial``."""
    state = PartialState()
    pending = _positionals(command)
    i = 0

    def fail(message: str, hint: str | None = None) -> None:
        if not partial:
            raise UsageError(message, hint or f"usage: {command.usage()}")

    def assign(opt: Opt, value: str) -> None:
        if opt.key in state.given and not partial and not opt.multiple:
            fail(f"option --{opt.name} given twice")
        state.given.add(opt.key)
        state.values[opt.key] = value
        if opt.multiple:
            state.lists.setdefault(opt.key, []).append(value)
        if opt in pending:
            pending.remove(opt)

    while i < len(tokens):
        token = tokens[i]
        i += 1
        is_option = not state.after_double_dash and token.startswith("-") and token != "-"
        if token == "--" and not state.after_double_dash:
            state.after_double_dash = True
            continue
        opt = None
        inline = None
        if is_option:
            spelling, inline = _split_long(token) if token.startswith("--") else (token, None)
            opt = command.option(spelling)
            if opt is None and token.startswith("--"):
                known = " ".join(f"--{o.name}" for o in command.all_options)
                hint = dict(command.option_hints).get(spelling, f"options: {known}")
                fail(f"command '{command.name}' has no option {spelling}", hint)
                continue
        if opt is None:  # a positional word (a single-dash word that is no option counts too)
            if not pending:
                fail(f"unexpected argument {quoted(token)}", _usage_hint(command, token))
                continue
            assign(pending[0], token)
            continue
        if opt.is_flag:
            if inline is not None:
                fail(f"option --{opt.name} takes no value")
            assign(opt, "")
            continue
        if inline is not None:
            assign(opt, inline)
        elif i < len(tokens):
            assign(opt, tokens[i])
            i += 1
        else:
            if partial:
                state.expecting_value_of = opt
                return state
            fail(f"option --{opt.name} needs a value <{opt.metavar}>")
    state.next_positional = pending[0] if pending else None
    return state


def parse(command: Command, tokens: Sequence[str]) -> Args:
    """Parse a command's words strictly into Args, applying implies/excludes and conversions."""
    state = walk(command, tokens)
    args = Args()
    for opt in command.all_options:
        args[opt.key] = False if opt.is_flag else opt.default
    for opt in command.all_options:
        if opt.key not in state.given:
            continue
        if opt.is_flag:
            args[opt.key] = True
            for implied in opt.implies:
                args[implied.replace("-", "_")] = True
            continue
        raw = state.values[opt.key]
        try:
            if opt.multiple:
                args[opt.key] = [opt.convert(value) for value in state.lists[opt.key]]
                continue
            args[opt.key] = opt.convert(raw)
        except ValueError as exc:
            raise _invalid(command, opt, raw, exc) from exc
    for opt in command.all_options:
        if opt.settle is not None and args[opt.key] is not None:
            try:
                args[opt.key] = opt.settle(args[opt.key], args)
            except ValueError as exc:
                raise _invalid(command, opt, state.values[opt.key], exc) from exc
    for opt in command.all_options:
        if opt.required and args[opt.key] is None:
            raise UsageError(f"missing <{opt.metavar or opt.name}>", f"usage: {command.usage()}")
        if args[opt.key] in (None, False):
            continue
        for other in opt.excludes:
            if args.get(other.replace("-", "_")) not in (None, False):
                raise UsageError(
                    f"--{opt.name} and --{other} cannot be used together",
                    f"pick one; usage: {command.usage()}",
                )
        if opt.needs and not any(args.get(n.replace("-", "_")) for n in opt.needs):
            raise UsageError(
                f"--{opt.name} requires {_one_of(opt.needs)}", f"usage: {command.usage()}"
            )
    return args


def _invalid(command: Command, opt: Opt, raw: str, exc: ValueError) -> UsageError:
    shown = raw if len(raw) <= 40 else raw[:37] + "..."
    return UsageError(
        f"option --{opt.name}: invalid value {quoted(shown)} ({exc})", _usage_hint(command, raw)
    )


def _usage_hint(command: Command, word: str) -> str:
    """The command's usage; for a word like an option that the command has not, where
    vshx's own options go (nu12 #15: `commit D vda -q` blamed --bandwidth's value)."""
    usage = f"usage: {command.usage()}"
    if len(word) < 2 or not word.startswith("-") or word[1:2].isdigit():
        return usage
    typed = word if re.fullmatch(r"[-\w.=:/]+", word) else quoted(word)
    return (
        f"{quoted(word)} is no option of {command.name}; vshx's own options (such as -q or "
        f"-c URI) go before the command: vshx {typed} {command.name} ...; {usage}"
    )


def _one_of(names: tuple[str, ...]) -> str:
    """virsh's wording: ``--wait``, or ``at least one of --timeout, --wait, or --pivot``."""
    spelled = [f"--{n}" for n in names]
    if len(spelled) == 1:
        return spelled[0]
    return f"at least one of {', '.join(spelled[:-1])}, or {spelled[-1]}"


LARGEST = 2**31 - 1  # a count or size option's limit: more than any real one


def whole_number(text: str, lowest: int, highest: int) -> int:
    """``text`` as a whole number from ``lowest`` to ``highest``; ValueError says which rule
    it broke in words (never Python's ``invalid literal for int()``)."""
    digits = text.strip()
    if not re.fullmatch(r"[+-]?[0-9]+", digits):
        raise ValueError("not a whole number")
    if digits.startswith("-") and digits.strip("-0"):
        raise ValueError("must not be negative" if lowest == 0 else f"must be at least {lowest}")
    if len(digits.lstrip("+-0")) > len(str(highest)) or int(digits) > highest:
        raise ValueError(f"must be at most {highest}")
    value = int(digits)
    if value < lowest:
        raise ValueError(f"must be at least {lowest}")
    return value


def non_negative_int(text: str) -> int:
    """Convert an option value that must be a whole number from 0 to 2**31-1."""
    return whole_number(text, 0, LARGEST)
