"""Read a qcow2 header's backing file pointer directly: microseconds instead of a qemu-img run.

"Who else uses this file as backing?" asks that of every image in a directory; spawning
qemu-img for each costs ~10 ms a file.  The header layout (magic, version, backing file
offset and size) is the same in qcow2 versions 2 and 3.
"""

from __future__ import annotations

import os
import struct

MAGIC = b"QFI\xfb"


def backing_file(path: str) -> str | None:
    """The backing file name as written in a qcow2 header; None for no backing / not qcow2."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(20)
            if len(header) < 20 or header[:4] != MAGIC:
                return None
            offset, size = struct.unpack(">QI", header[8:20])
            if not offset or not size or size > 4096:
                return None
            handle.seek(offset)
            return handle.read(size).decode("utf-8", errors="surrogateescape")
    except OSError:
        return None


def chain_paths(path: str, limit: int = 64) -> list[str]:
    """Canonical paths of an image and everything below it (relative names as qemu resolves)."""
    result = [os.path.realpath(path)]
    current = path
    for _ in range(limit):
        name = backing_file(current)
        if not name or "://" in name or name.startswith("json:"):
            break
        current = name if os.path.isabs(name) else os.path.join(os.path.dirname(current), name)
        result.append(os.path.realpath(current))
    return result
