"""The ``vshx`` program's first lines: libvirt's libraries start loading before vshx's code.

The console script and ``python -m vshx`` call ``run`` here, which hands a one-shot command
to the user's warm server when one runs (frontends/warm_client.py), and otherwise starts the
loader (storage/preload.py) where the command line will use libvirt, and then imports and
runs the front end.  Nothing this module loads imports ``typing`` (``vshx/__init__.py`` imports
nothing): Python's ~10 ms of ``typing``, ``re`` and ``enum`` then load beside the loader too.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing itself is not imported here: see the docstring
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import NoReturn

# the words after which vshx needs no libvirt: shell completion (its keystrokes stay fast and
# answer from caches), and help or the version (said without a connection)
NO_LIBVIRT = frozenset({"complete", "--help", "-h", "--version"})


def wants_libvirt(words: Sequence[str]) -> bool:
    """Whether the command line will use libvirt; a guess either way costs only time."""
    return NO_LIBVIRT.isdisjoint(words)


def run() -> NoReturn:
    """The ``vshx`` program: ``--warm`` manages the warm server; a one-shot command goes to
    one when it runs (frontends/warm_client.py: that ends this process); else ``run_here``."""
    words = sys.argv[1:]
    if words[:1] == ["--warm"]:
        from vshx.frontends.warm_server import main as warm_main

        raise SystemExit(warm_main(words[1:], run_here))
    from vshx.frontends import warm_client

    if warm_client.wants_warm(words):
        warm_client.run_warm(words)  # returns only when no server took the command
    run_here()


def run_here(end: Callable[[int], NoReturn] | None = None) -> NoReturn:
    """Start loading libvirt ahead where it will be used, then run the front end.  Ctrl-C
    before the front end handles it (while Python still loads vshx) ends vshx as it ends a
    command, with ``error: interrupted`` and status 1, not a Python traceback."""
    try:
        if wants_libvirt(sys.argv[1:]):
            from vshx.storage.preload import load_libvirt_ahead

            load_libvirt_ahead()
        from vshx.frontends.cli import run as run_cli

        if end is None:
            run_cli()
        run_cli(end)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(1) from None
