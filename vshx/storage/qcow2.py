"""Read qcow2 headers directly: microseconds instead of a qemu-img run (~10-15 ms each).

"Who else uses this file as backing?" asks that of every image in a directory, and every
command reads its disk's chain.  The header layout (magic, version, backing file offset and
size, virtual size) is the same in qcow2 versions 2 and 3; the backing format is header
extension 0xE2792ACA.  Where the header cannot give qemu-img's answer (not qcow2 and not
declared raw, an external data file, a protocol or json: backing name, a block device, a
missing file, a loop), ``read_chain`` returns None and the caller asks qemu-img.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from stat import S_ISBLK, S_ISCHR, S_ISFIFO, S_ISREG, S_ISSOCK
from typing import Any, Literal

from vshx.errors import VshxError
from vshx.spec.render import quoted
from vshx.storage import host as files

MAGIC = b"QFI\xfb"
DATA_FILE_EXTENSION = 0x44415441  # "DATA": the name of an external data file


def backing_file(path: str) -> str | None:
    """The backing file name as written in a qcow2 header; None for no backing / not qcow2."""
    try:
        names = header_names(path)
    except VshxError:
        return None
    return names[0] if names else None


def _unreadable(path: str, exc: OSError) -> VshxError:
    return VshxError(
        f"cannot read {path} to see which files it uses: {exc.strerror}",
        "vshx refuses what it cannot check; fix the permissions, or move that file away",
    )


FIRST_READ = 4096  # a header, its extensions and names fit here, but for long names
CLUSTER_READ = 65536  # ... and always in the first cluster (qemu-img writes them there)


class NotAnImage(VshxError):
    """A chain names a FIFO, socket or character device: opening it may never return."""


def not_an_image(path: str, mode: int) -> NotAnImage:
    what = "a FIFO" if S_ISFIFO(mode) else "a socket" if S_ISSOCK(mode) else "a character device"
    return NotAnImage(
        f"{path} is {what}, not an image file: reading it may wait forever, so vshx does not",
        "a chain's files are regular files or block devices: move it away, or point the image "
        "that names it at the right file (qemu-img rebase -u -F FMT -b FILE IMAGE)",
    )


def encrypted(path: str) -> bool:
    """True for a qcow2 file whose header names an encryption method (crypt_method, a
    big-endian uint32 at byte 32); a file that cannot be read is for its reader to report."""
    try:
        head = _read_head(path, 36)
    except (OSError, VshxError):
        return False
    return len(head) == 36 and head[:4] == MAGIC and struct.unpack(">I", head[32:36])[0] != 0


def require_image_kind(path: str) -> None:
    """Raise NotAnImage when ``path`` is there and is neither a regular file, a block device
    nor a directory (a stat first: opening a FIFO blocks until a writer comes)."""
    try:
        mode = files.stat(path).st_mode
    except (OSError, ValueError):
        return  # missing or unreadable: the read that follows says so
    if S_ISFIFO(mode) or S_ISSOCK(mode) or S_ISCHR(mode):
        raise not_an_image(path, mode)


def _read_head(path: str, size: int) -> bytes:
    """The first ``size`` bytes of a file (a stat, one open, one pread: the scan reads
    hundreds; a remote host answers the stat and the bytes in one look); a FIFO, socket or
    character device refuses (NotAnImage) before it is opened."""
    require_image_kind(path)
    return files.read(path, size)


def _names_in(head: bytes, whole: bool) -> tuple[str | None, str | None] | None | Literal[False]:
    """(backing name, data file name) from a header's first bytes; None: not qcow2; False:
    they reach past ``head``, read more.  ``whole``: ``head`` is all there is to read (the
    first cluster, or a shorter file), so what lies past it is not there."""
    if len(head) < 72 or head[:4] != MAGIC:
        return None
    version, offset, size = struct.unpack(">IQI", head[4:20])
    backing = None
    if offset and size:
        if offset + size <= len(head):
            backing = head[offset : offset + size].decode("utf-8", errors="surrogateescape")
        elif not whole:
            return False
    data_file = None
    if version >= 3 and len(head) >= 104:
        (extension,) = struct.unpack(">I", head[100:104])
        while extension + 8 <= len(head):
            kind, length = struct.unpack(">II", head[extension : extension + 8])
            if kind == 0:
                break
            if kind == DATA_FILE_EXTENSION:
                if extension + 8 + length > len(head) and not whole:
                    return False
                raw = head[extension + 8 : extension + 8 + length]
                data_file = raw.decode("utf-8", errors="surrogateescape")
            extension += 8 + (length + 7) // 8 * 8
        else:
            if not whole:
                return False  # the extensions go on past what was read
    return backing, data_file


def header_names_in(head: bytes) -> tuple[str | None, str | None] | None:
    """``header_names`` from a file's first bytes already read: the whole file, or at least
    its first 2 MiB (the largest cluster, which holds the header, its extensions and the
    backing name); None when they are not a qcow2 header."""
    names = _names_in(head, whole=True)
    return None if names is False else names


def header_names(path: str) -> tuple[str | None, str | None] | None:
    """(backing name, external data file name) as a qcow2 header writes them; None when the
    file is missing or not qcow2.  A file that is there but cannot be read raises VshxError."""
    try:
        head = _read_head(path, FIRST_READ)
        names = _names_in(head, whole=len(head) < FIRST_READ)
        if names is False:  # names past the first 4 KiB: read the cluster they are in
            names = _names_in(_read_head(path, CLUSTER_READ), whole=True)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    return None if names is False else names


def internal_snapshot_count(path: str) -> int | None:
    """How many internal snapshots a qcow2 header lists (nb_snapshots, a big-endian uint32 at
    byte 60); None when the file is missing or not qcow2.  A file that is there but cannot be
    read raises VshxError: vshx does not guess that it holds none."""
    try:
        head = _read_head(path, 72)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    if len(head) < 64 or head[:4] != MAGIC:
        return None
    (count,) = struct.unpack(">I", head[60:64])
    return int(count)


def _as_qemu_opens(name: str, image: str) -> list[str]:
    """Where a relative name inside an image may point: beside the image, and from QEMU's
    working directory ("/" under libvirt), which is where QEMU 7.2 opens a relative data file
    or a name inside a json: backing name.  Both count, so no user is missed."""
    if os.path.isabs(name):
        return [name]
    return [os.path.join(os.path.dirname(image), name), os.path.join("/", name)]


def named_files(path: str, head: bytes, whole: bool) -> list[str]:
    """The files a qcow2 header's first bytes name (backing file, data file) as QEMU opens
    them; none for a json: or protocol backing name (its files are read when met)."""
    names = _names_in(head, whole)
    if not names:
        return []
    backing, data_file = names
    found = []
    if backing and "://" not in backing and not backing.startswith("json:"):
        found += _as_qemu_opens(backing, path)[:1]
    if data_file:
        found += _as_qemu_opens(data_file, path)
    return found


def prefetch_chains(paths: list[str], directories: list[str] | tuple[()] = ()) -> None:
    """Gather these files, these directories' entries and every file their headers name,
    down their chains (a remote host's round trips; nothing locally)."""
    files.prefetch(paths, directories, named_files)


def image_files(path: str) -> list[str]:
    """An image and its external data file (qcow2 ``data_file``): the files its data is in."""
    names = header_names(path)
    if names is None or names[1] is None:
        return [path]
    return [path, *_as_qemu_opens(names[1], path)]


def _nested(options: dict[str, Any]) -> dict[str, Any]:
    """QEMU's dotted option keys ("file.filename") as nested objects, as QEMU reads them."""
    result: dict[str, Any] = {}
    for key, value in options.items():
        node = result
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        if isinstance(value, dict):
            merged = node.get(leaf)
            value = {**(merged if isinstance(merged, dict) else {}), **_nested(value)}
        node[leaf] = value
    return result


def _filenames(options: dict[str, Any]) -> list[str]:
    """Every file name anywhere in a json: backing name's options (file, data-file, backing)."""
    found: list[str] = []
    for key, value in options.items():
        if key in ("filename", "file") and isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            found += _filenames(value)
    return found


def _image_below(options: dict[str, Any], name: str) -> str | None:
    """The image whose own header goes on with the chain; None where the options end it."""
    if "backing" in options:
        below = options["backing"]
        if below is None:
            return None  # "backing": null: no backing file
        if isinstance(below, dict):
            return _image_below(below, name)
        raise VshxError(
            f"cannot follow the backing name {quoted(name)}: its backing is a node name",
            "vshx refuses what it cannot check; move that image away, or --force",
        )
    node: Any = options
    while isinstance(node, dict):
        if isinstance(node.get("filename"), str):
            return str(node["filename"])
        node = node.get("file")
        if isinstance(node, str):
            return node
    return None  # a network protocol (nbd, iscsi, ...): no local file below


def json_backing(name: str, overlay: str) -> tuple[list[str], str | None]:
    """A ``json:{...}`` backing name: every file it names, and the image to go on from."""
    try:
        options = json.loads(name[len("json:") :])
    except ValueError:
        options = None
    if not isinstance(options, dict):
        raise VshxError(
            f"cannot read the backing name of {overlay}: {quoted(name)} is not a JSON object",
            "vshx refuses what it cannot check; move that image away, or --force",
        )
    options = _nested(options)
    files = [f for found in _filenames(options) for f in _as_qemu_opens(found, overlay)]
    below = _image_below(options, name)
    return files, (_as_qemu_opens(below, overlay)[0] if below else None)


def chain_files(
    path: str,
    limit: int = 64,
    names_of: Callable[[str], tuple[str | None, str | None] | None] = header_names,
) -> list[str]:
    """Every file an image's data is in: the image, the images below it, their external data
    files and every file a ``json:`` backing name names (relative names as QEMU resolves
    them).  A header that cannot be read, or a backing name that cannot be followed, raises
    VshxError (fail closed); a missing file ends the chain.  ``names_of``: how a header is
    read (a scan that follows many chains through the same files reads each header once)."""
    files = [path]
    current = path
    for _ in range(limit):
        names = names_of(current)
        if names is None:
            break
        backing, data_file = names
        if data_file:
            files += _as_qemu_opens(data_file, current)
        if not backing or "://" in backing:
            break
        if backing.startswith("json:"):
            named, below = json_backing(backing, current)
            files += named
            if below is None:
                break
            current = below
        else:
            current = (
                backing
                if os.path.isabs(backing)
                else os.path.join(os.path.dirname(current), backing)
            )
        files.append(current)
    return list(dict.fromkeys(files))


def chain_paths(
    path: str, limit: int = 64, resolve: Callable[[str], str] | None = None
) -> list[str]:
    """Canonical paths of an image and everything below it (relative names as qemu resolves)."""
    real = resolve or files.realpath
    return list(dict.fromkeys(real(f) for f in chain_files(path, limit)))


BACKING_FORMAT_EXTENSION = 0xE2792ACA
BITMAPS_EXTENSION = 0x23852875
INCOMPATIBLE_DATA_FILE = 1 << 2  # the guest data lives in another file: allocation unknown here


def _header(path: str) -> tuple[int, str | None, str | None] | None:
    """(virtual size, backing name, backing format) of a qcow2 image; None if not that simple."""
    head = _read_head(path, FIRST_READ)
    if len(head) == FIRST_READ and _header_in(head) is False:
        head = _read_head(path, CLUSTER_READ)  # header, extensions and name share the cluster
    found = _header_in(head)
    return None if found is False else found


def _header_in(head: bytes) -> tuple[int, str | None, str | None] | None | Literal[False]:
    """``_header`` from the first bytes of a file; False: what it needs lies past them."""
    if len(head) < 72 or head[:4] != MAGIC:
        return None
    version, backing_offset, backing_size = struct.unpack(">IQI", head[4:20])
    (virtual_size,) = struct.unpack(">Q", head[24:32])
    if version == 2:
        extensions = 72
    elif version == 3 and len(head) >= 104:
        (incompatible,) = struct.unpack(">Q", head[72:80])
        if incompatible & INCOMPATIBLE_DATA_FILE:
            return None
        (extensions,) = struct.unpack(">I", head[100:104])
    else:
        return None
    backing_format = None
    while True:
        if extensions + 8 > len(head):
            return False
        kind, length = struct.unpack(">II", head[extensions : extensions + 8])
        if kind == 0:
            break
        if kind == BACKING_FORMAT_EXTENSION:
            if extensions + 8 + length > len(head):
                return False
            backing_format = head[extensions + 8 : extensions + 8 + length].decode(
                "ascii", "replace"
            )
        extensions += 8 + (length + 7) // 8 * 8
    backing = None
    if backing_offset and backing_size:
        if backing_offset + backing_size > len(head):
            return False
        raw = head[backing_offset : backing_offset + backing_size]
        backing = raw.decode("utf-8", errors="surrogateescape")
    return virtual_size, backing, backing_format


def may_hold_bitmaps(path: str) -> bool:
    """False only when the header proves the image holds no persistent bitmap (qcow2 without
    the bitmaps extension); True when it has one, or when only qemu-img can tell."""
    try:
        head = _read_head(path, FIRST_READ)
        if len(head) == FIRST_READ and _bitmaps_in(head) is None:
            head = _read_head(path, CLUSTER_READ)  # the extensions go on past 4 KiB
    except OSError:
        return True
    found = _bitmaps_in(head)
    return True if found is None else found


def _bitmaps_in(head: bytes) -> bool | None:
    """``may_hold_bitmaps`` from a header's first bytes; None: the answer lies past them."""
    if head[:4] != MAGIC:
        return True  # not qcow2 by header: qemu-img decides (raw holds none)
    (version,) = struct.unpack(">I", head[4:8])
    if version == 2:
        return False  # compat 0.10 has no bitmaps
    if len(head) < 104:
        return True
    (extensions,) = struct.unpack(">I", head[100:104])
    while extensions + 8 <= len(head):
        kind, length = struct.unpack(">II", head[extensions : extensions + 8])
        if kind == 0:
            return False
        if kind == BITMAPS_EXTENSION:
            return True
        extensions += 8 + (length + 7) // 8 * 8
    return None


def read_chain(path: str, limit: int = 64) -> list[dict[str, Any]] | None:
    """The chain as ``qemu-img info --backing-chain --output=json`` gives it (the keys vshx
    reads), from headers and stat alone; None when only qemu-img can tell."""
    entries: list[dict[str, Any]] = []
    current = path
    declared: str | None = "qcow2"  # the top is probed: it must be qcow2
    seen: set[str] = set()
    for _ in range(limit):
        real = files.realpath(current)
        if real in seen:
            return None
        seen.add(real)
        try:
            stat = files.stat(current)
            if S_ISBLK(stat.st_mode):
                return None  # a block device (LVM, iSCSI): its sizes are not in stat
            if S_ISFIFO(stat.st_mode) or S_ISSOCK(stat.st_mode) or S_ISCHR(stat.st_mode):
                raise not_an_image(current, stat.st_mode)
            if not S_ISREG(stat.st_mode):
                return None
            header = None if declared == "raw" else _header(current)
        except OSError:
            return None
        entry: dict[str, Any] = {"filename": current, "actual-size": stat.st_blocks * 512}
        if declared == "raw":
            entries.append({**entry, "format": "raw", "virtual-size": stat.st_size})
            return entries
        if header is None or declared not in (None, "qcow2"):
            return None
        virtual_size, backing, backing_format = header
        entries.append({**entry, "format": "qcow2", "virtual-size": virtual_size})
        if backing is None:
            return entries
        if (
            "://" in backing
            or backing.startswith("json:")
            or backing_format
            not in (
                None,
                "qcow2",
                "raw",
            )
        ):
            return None
        entries[-1]["backing-filename"] = backing
        if backing_format:
            entries[-1]["backing-filename-format"] = backing_format
        parent = os.path.dirname(current)
        current = backing if os.path.isabs(backing) else os.path.join(parent, backing)
        declared = backing_format  # None: qemu probes it; only a qcow2 header is certain
    return None
