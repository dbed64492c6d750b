"""Where shell completion keeps its inventory snapshot per URI, and how a change drops it.

Apart from vshx.completion.inventory so that a command that changed something (every merge)
drops the snapshot without loading the inventory itself.
"""

from __future__ import annotations

from vshx.storage.statefiles import Place


def shell_cache_name(uri: str) -> str:
    """The file name of shell completion's inventory snapshot for one URI."""
    import zlib

    return f"inventory-{zlib.crc32(uri.encode()):08x}{len(uri):04x}.json"


def shell_cache_path(uri: str) -> str:
    """Where shell completion keeps its inventory snapshot for one URI."""
    return Place("cache").path(shell_cache_name(uri))


def forget_shell_cache(uri: str) -> None:
    """Drop the shell-completion snapshot (a command changed domains or images)."""
    Place("cache").remove(shell_cache_name(uri))
