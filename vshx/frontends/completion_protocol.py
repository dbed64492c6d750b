"""`vshx complete [--shell bash|zsh|fish] -- LINE`: the hidden entry point the shell scripts call.

In the spirit of `virsh complete -- LINE`: the line as typed after `vshx`, up to the cursor;
candidates one per line (sh-quoted: each special character behind a backslash for bash, in single
quotes for zsh; raw value TAB description for fish).
Any failure prints nothing: completion must never put a traceback on the user's terminal.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from vshx.errors import EXIT_OK

# A keystroke's answer, or nothing: a frozen libvirtd must not freeze the user's shell.
DEADLINE = float(os.environ.get("VSHX_COMPLETE_DEADLINE", "0.3"))
WARM_DEADLINE = 60.0


def _readonly_connection(uri: str) -> Any:
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt.openReadOnly(uri)


def main(argv: Sequence[str]) -> int:
    shell = "bash"
    uri = None
    args = list(argv)
    deadline = DEADLINE
    while args and args[0] != "--":
        option = args.pop(0)
        if option == "--warm":  # a background run after a timeout: fill the cache, no output
            deadline = WARM_DEADLINE
        elif option == "--shell" and args:
            shell = args.pop(0)
        elif option in ("-c", "--connect") and args:
            uri = args.pop(0)
    line = " ".join(args[1:2]) if args else ""
    import io

    real_stderr, sys.stderr = sys.stderr, io.StringIO()  # e.g. a broken plugin's warning
    found: list[list[str]] = []

    def work() -> None:
        try:
            found.append(complete_line(line, shell, uri))
        except Exception:  # silent by contract: no output, no traceback
            pass

    import threading

    worker = threading.Thread(target=work, name="vshx-complete", daemon=True)
    worker.start()
    worker.join(deadline)
    sys.stderr = real_stderr
    if worker.is_alive() or deadline == WARM_DEADLINE:
        if deadline == DEADLINE:  # too slow now: let a background run fill the cache
            warm_in_background(list(argv))
        else:
            _unlink(warming_lock())
        sys.stdout.flush()
        os._exit(EXIT_OK)  # a frozen daemon: give up silently, do not wait for it
    if found:
        sys.stdout.write("".join(text + "\n" for text in found[0]))
    return EXIT_OK


def warming_lock() -> str:
    """The name of the background warm-up's marker in vshx's cache directory."""
    from vshx.completion.shell_cache import shell_cache_name

    return shell_cache_name("warming")


def _unlink(name: str) -> None:
    from vshx.storage.statefiles import Place

    Place("cache").remove(name)


def warm_in_background(argv: list[str]) -> None:
    """Finish this completion in a detached process (at most one at a time per user), so that
    a cold cache on a big or slow host warms up instead of missing the deadline forever."""
    import subprocess
    import time

    from vshx.storage.statefiles import Place

    cache, lock = Place("cache"), warming_lock()
    made = cache.mtime(lock)
    if made is not None and time.time() - made < WARM_DEADLINE:
        return
    if not cache.write(lock, ""):
        return  # no safe cache directory: nothing to warm either
    try:
        subprocess.Popen(
            [sys.executable, "-m", "vshx", "complete", "--warm", *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        pass


def complete_line(line: str, shell: str, uri: str | None) -> list[str]:
    from vshx.completion.engine import Engine, global_uri, inside_quote
    from vshx.completion.inventory import Inventory
    from vshx.completion.shell_cache import shell_cache_name
    from vshx.pluginhost.host import PluginHost
    from vshx.shell.builtins import BUILTINS
    from vshx.spec.lexer import split_line
    from vshx.storage.default_uri import default_uri

    lexed = split_line(line, partial=True)
    words = (lexed.commands or [[]])[0]
    target_uri = global_uri(words) or uri or default_uri()
    connection: list[Any] = []

    def conn() -> Any:
        if not connection:
            connection.append(_readonly_connection(target_uri))
        return connection[0]

    engine = Engine(
        PluginHost(BUILTINS, specs_only=True),
        Inventory(conn, persist=shell_cache_name(target_uri)),
        target_uri,
    )
    result = engine.complete(line, skip_globals=True)
    # the shells read one candidate per line: a name holding a line break (or a tab, for fish)
    # would come back as pieces, one of them a live shell word; such names are not offered
    if shell == "fish":
        return [
            f"{c.value}\t{_one_line(c.meta)}" if c.meta else c.value
            for c in result.candidates
            if _one_line(c.value) == c.value and "\t" not in c.value
        ]
    if shell == "bash" and lexed.open_quote:
        # typed inside a quote ("vm-na or 'vm-na): bash inserts the candidate after that quote
        # and closes it itself, so the name goes as that quote reads it
        inside = [inside_quote(c.value, lexed.open_quote) for c in result.candidates]
        return [text for text in inside if text is not None and _one_line(text) == text]
    quoted = result.backslash_quoted() if shell == "bash" else result.quoted()
    return [text for text in quoted if _one_line(text) == text]


def _one_line(text: str) -> str:
    """``text`` without line breaks of any kind (what splitlines would split on)."""
    return "".join(text.splitlines())
