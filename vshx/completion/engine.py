"""The completion engine: one for the REPL and for bash/zsh/fish (through `vshx complete`).

Two questions kept apart, as pgcli does: *what kind of thing goes here* (read from the command
spec by the same walker the parser uses, in its silent partial mode) and *which candidates
exist* (the cached Inventory, the file system, the registry).  Pure Python, returns strings;
never imports prompt-toolkit; touches libvirt only for kinds that need libvirt data.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple

from vshx.spec.global_options import TAKES_VALUE
from vshx.spec.kinds import chosen
from vshx.spec.lexer import split_line
from vshx.spec.spec import Command, Opt, walk
from vshx.storage.paths import has_image_suffix

if TYPE_CHECKING:
    from vshx.completion.inventory import Inventory
    from vshx.pluginhost.host import PluginHost
    from vshx.storage.chain import Chain, Layer

KNOWN_URIS = ("qemu:///system", "qemu:///session", "test:///default")
GLOBAL_VALUE_OPTIONS = frozenset(TAKES_VALUE)  # --record FILE too: its value is no command


class Candidate(NamedTuple):
    """One completion: the raw value, and a short description for menus."""

    value: str
    meta: str = ""


class Completions(NamedTuple):
    """Candidates for the word being typed, which starts ``start`` characters into the line."""

    candidates: list[Candidate]
    start: int
    prefix: str  # the word as typed so far, unquoted

    def quoted(self) -> list[str]:
        """Each candidate as text that replaces the typed word, quoted for sh and the REPL."""
        return [quote_candidate(c.value) for c in self.candidates]

    def backslash_quoted(self) -> list[str]:
        """Each candidate quoted as bash quotes a file name (``backslash_quoted``)."""
        return [backslash_quoted(c.value) for c in self.candidates]


def quote_candidate(value: str) -> str:
    if len(value) > 1 and value.endswith("/"):  # the slash outside the quotes: typing goes on
        return shlex.quote(value[:-1]) + "/"
    return shlex.quote(value)


# what sh never reads as anything but itself, in any place of a word (shlex's own set)
PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-")


def backslash_quoted(value: str) -> str:
    """``value`` for bash, each special character behind a backslash, as bash quotes file
    names itself: bash inserts the part every candidate shares, and ``'vda[`` (the shared
    part of ``'vda[2]'`` and ``'vda[3]'``) is a word no candidate completes any more, where
    ``vda\\[`` is (atk8 F7).  Characters outside ASCII are not special to sh: kept as they are."""
    return "".join(ch if ch in PLAIN or ord(ch) > 127 else "\\" + ch for ch in value)


def inside_quote(value: str, quote: str) -> str | None:
    """``value`` as typed inside an opened ``quote`` (bash completes after that quote and
    closes it): as it is inside single quotes, ``$ ` \\ "`` behind a backslash inside double
    quotes.  None where it cannot be written there: a single quote inside single quotes, and
    ``!`` inside double quotes (bash's history expansion keeps its backslash)."""
    if quote == "'":
        return None if "'" in value else value
    if "!" in value:
        return None
    return "".join("\\" + ch if ch in '$`\\"' else ch for ch in value)


class Engine:
    """Completes a line (up to the cursor) from the registry and a cached Inventory."""

    def __init__(self, host: PluginHost, inventory: Inventory, uri: str | None = None) -> None:
        self.host = host
        self.inventory = inventory
        self.uri = uri  # for virsh's own completion of passthrough commands
        self.providers: dict[str, Callable[[str, dict[str, str]], Iterable[Candidate]]] = {
            "domain": lambda p, v: self.domains(p),
            "domain_or_image": self.domain_or_image,
            "disk": self.disks,
            "layer": self.layers,
            "image": lambda p, v: files(p, images_only=True),
            "directory": lambda p, v: files(p, dirs_only=True),
            "file": lambda p, v: files(p),
            "snapshot": self.snapshots,
            "uri": lambda p, v: (Candidate(u) for u in KNOWN_URIS),
            "command": lambda p, v: self.commands(),
            "format": lambda p, v: (Candidate(f) for f in ("qcow2", "raw")),
            "shell": lambda p, v: (Candidate(s) for s in ("bash", "zsh", "fish")),
            "route": lambda p, v: (Candidate(r) for r in ("commit", "pull", "copy")),
        }

    def complete(self, line: str, skip_globals: bool = False) -> Completions:
        lexed = split_line(line, partial=True)
        words = lexed.commands[-1] if lexed.commands else []
        if lexed.ends_in_word:
            prefix, before = words[-1], words[:-1]
        else:
            prefix, before = "", words
        pending = pending_global(before) if skip_globals else None
        if pending is not None:  # `vshx -c <Tab>`: the global option's value (nu12 #7)
            kind = "uri" if pending in ("-c", "--connect") else "file"
            found: Iterable[Candidate] = self.providers[kind](prefix, {})
        else:
            found = self._candidates(strip_globals(before) if skip_globals else before, prefix)
        chosen = [c for c in found if c.value.startswith(prefix)]
        return Completions(unique(chosen), lexed.last_word_start, prefix)

    def _candidates(self, before: list[str], prefix: str) -> Iterable[Candidate]:
        if not before:
            return self.commands()
        command = self.host.command(before[0])
        if command is None:
            return self.virsh_candidates(before, prefix)
        state = walk(command, before[1:], partial=True)
        if state.expecting_value_of is not None:
            return self.values(state.expecting_value_of, prefix, state.values)
        if prefix.startswith("-") and not state.after_double_dash:
            return options(command, state.given)
        if state.next_positional is not None:
            return self.values(state.next_positional, prefix, state.values)
        return options(command, state.given)

    def virsh_candidates(self, before: list[str], prefix: str) -> list[Candidate]:
        """A passthrough command: ask `virsh complete` (bounded; silent on any failure)."""
        if self.uri is None:
            return []
        import subprocess

        from vshx.shell.passthrough import virsh_binary, virsh_commands

        binary = virsh_binary()
        if binary is None or before[0] not in virsh_commands():
            return []
        argv = [binary, "-c", self.uri, "complete", "--", *before, prefix]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=2, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return []
        return [Candidate(line) for line in proc.stdout.splitlines() if line]

    def values(self, opt: Opt, prefix: str, given: dict[str, str]) -> Iterable[Candidate]:
        kind = opt.complete or ""
        if kind == "layer":
            return self.layers(prefix, given, opt.key)
        provider = self.providers.get(kind)
        if provider is not None:
            return provider(prefix, given)
        words = chosen(kind)
        if words is not None:  # a plugin's fixed words (spec/kinds.py choices)
            return [Candidate(word) for word in words]
        plugin_completer = self.host.completer(kind) if kind else None
        if plugin_completer is None:
            return []
        return [
            c if isinstance(c, Candidate) else Candidate(str(c))
            for c in plugin_completer(prefix, dict(given))
        ]

    # -- candidate providers ------------------------------------------------------------------
    def commands(self) -> list[Candidate]:
        result = []
        for command in self.host.all_commands():
            result.append(Candidate(command.name, command.help))
            result += [Candidate(alias, f"= {command.name}") for alias in command.aliases]
        if self.uri is not None:  # the shells and the REPL: virsh's commands run here too
            from vshx.shell.passthrough import virsh_commands

            ours = {c.value for c in result}
            result += [
                Candidate(n, f"virsh: {h}") for n, h in virsh_commands().items() if n not in ours
            ]
        return sorted(result)

    def domains(self, prefix: str) -> list[Candidate]:
        entries = sorted(self.inventory.domains(), key=lambda d: (not d.running, d.name))
        result = [Candidate(d.name, d.state) for d in entries if d.name.startswith(prefix)]
        if prefix and not result:  # like virsh: ids and uuids when no name matches
            result = [Candidate(str(d.id), f"{d.name} {d.state}") for d in entries if d.running]
            result += [Candidate(d.uuid, d.name) for d in entries]
        return result

    def domain_or_image(self, prefix: str, given: dict[str, str]) -> list[Candidate]:
        if prefix.startswith(("/", ".", "~")):
            return list(files(prefix, images_only=True))
        return self.domains(prefix)

    def disks(self, prefix: str, given: dict[str, str]) -> list[Candidate]:
        domain = given.get("domain")
        if not domain or domain.startswith(("/", ".")):
            return []
        return [Candidate(t, src) for t, src in self.inventory.disks(domain)]

    def layers(self, prefix: str, given: dict[str, str], key: str = "") -> list[Candidate]:
        """Layers of the disk's chain; for --base and --top only those the option accepts."""
        domain, disk, image = given.get("domain"), given.get("disk"), given.get("image")
        if domain and not disk and os.path.sep in domain:
            image = domain
        if image:
            chain = self.inventory.image_chain(image)
        elif domain and disk:
            chain = self.inventory.chain(domain, disk)
        else:
            return []
        from vshx.storage.chain import human_size

        result = []
        count = len(chain.layers)
        for layer in accepted(chain, key, given):
            where = (
                "active"
                if layer.position == 0
                else ("base" if layer.position == count - 1 else f"{layer.position} below active")
            )
            meta = f"{where}, {human_size(layer.virtual_size)}, {human_size(layer.allocated)} used"
            result.append(Candidate(layer.name, meta))
            result.append(Candidate(chain.ref_of(layer), f"{layer.name}, {where}"))
        return result

    def snapshots(self, prefix: str, given: dict[str, str]) -> list[Candidate]:
        domain = given.get("domain")
        return [Candidate(s) for s in self.inventory.snapshots(domain)] if domain else []


def accepted(chain: Chain, key: str, given: dict[str, str]) -> list[Layer]:
    """What commit/pull would take for this option: --base below the top (and never the
    active layer), --top above the base (and never the bottom)."""

    def position(ref: str | None, default: int) -> int:
        if not ref:
            return default
        try:
            return chain.resolve(ref).position
        except Exception:  # a half-typed or wrong ref: no filter from it
            return default

    last = len(chain.layers) - 1
    if key == "base":
        top = position(given.get("top"), 0)
        return [layer for layer in chain.layers if layer.position > top]
    if key == "drop":  # middle layers only: the active one and the base are flatten's
        return [layer for layer in chain.layers if 0 < layer.position < last]
    if key == "top":
        base = position(given.get("base"), last)
        return [layer for layer in chain.layers if layer.position < min(base, last)]
    return list(chain.layers)


def options(command: Command, given: set[str]) -> list[Candidate]:
    """Options not given yet and not excluded by one that was."""
    excluded = set()
    for opt in command.all_options:
        if opt.key in given:
            excluded |= {e.replace("-", "_") for e in opt.excludes}
    for opt in command.all_options:
        if any(e.replace("-", "_") in given for e in opt.excludes):
            excluded.add(opt.key)
    return [
        Candidate(f"--{o.name}", o.help)
        for o in command.all_options
        if (o.key not in given or o.multiple) and o.key not in excluded
    ]


def files(prefix: str, images_only: bool = False, dirs_only: bool = False) -> list[Candidate]:
    """Paths under the typed directory: directories and disk images first."""
    expanded = os.path.expanduser(prefix)
    directory, partial = os.path.split(expanded)
    try:
        entries = sorted(os.scandir(directory or "."), key=lambda e: e.name)
    except OSError:
        return []
    shown = prefix[: len(prefix) - len(partial)]
    dirs, images, others = [], [], []
    for entry in entries:
        if not entry.name.startswith(partial) or (entry.name.startswith(".") and not partial):
            continue
        if entry.is_dir():
            dirs.append(Candidate(shown + entry.name + "/", "directory"))
        elif dirs_only:
            continue
        elif has_image_suffix(entry.name):
            images.append(Candidate(shown + entry.name, "image"))
        elif not images_only:
            others.append(Candidate(shown + entry.name, "file"))
    return dirs + images + others


def _after_globals(words: list[str]) -> tuple[int, str | None]:
    """Where the command word starts after vshx's global options, and the global option whose
    value is the word being typed (None when there is none)."""
    i = 0
    while i < len(words) and words[i].startswith("-"):
        if words[i] in GLOBAL_VALUE_OPTIONS:
            if i + 1 == len(words):
                return len(words), words[i]
            i += 2
        else:
            i += 1
    return i, None


def strip_globals(words: list[str]) -> list[str]:
    """Drop vshx's global options before the command word (shell completion sees them)."""
    return words[_after_globals(words)[0] :]


def pending_global(words: list[str]) -> str | None:
    """The global option (``-c``, ``-f``...) whose value is the word being typed, if any."""
    return _after_globals(words)[1]


def global_uri(words: list[str]) -> str | None:
    for i, word in enumerate(words[:-1]):
        if word in ("-c", "--connect"):
            return words[i + 1]
    return None


def unique(candidates: list[Candidate]) -> list[Candidate]:
    seen: set[str] = set()
    result = []
    for candidate in candidates:
        if candidate.value not in seen:
            seen.add(candidate.value)
            result.append(candidate)
    return result
