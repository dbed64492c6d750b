"""How far a qcow2 may grow: the highest offset it may reach once a merge writes into it.

A qcow2 in a file grows the file; one on a block device (an LVM volume, a loop device) grows
into the device, whose size is all it has: QEMU allocates a cluster where the refcounts say
one is free (a hole first, else past the highest cluster in use), and a write past the
device's end fails with ENOSPC, leaving the clusters written so far in the image.  So the
bound is read from the image's own refcounts: the end of the highest cluster in use (what
``qemu-img check`` prints as "Image end offset" for a consistent image), plus every cluster
the written bytes may take, plus the L2 tables and refcount blocks those may need.

Read with ``host.read`` (on a remote host over ssh too).  What the reader cannot vouch for
(a dirty or corrupt image, lazy refcounts not written back, an unknown feature) raises
VshxError: vshx does not guess a device is large enough.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from vshx.errors import VshxError
from vshx.storage import host as files
from vshx.storage.qcow2 import MAGIC

L1_OFFSET = 0x00FFFFFFFFFFFE00  # L1 entries: bits 9-55 hold the L2 table's offset
REFTABLE_OFFSET = 0xFFFFFFFFFFFFFE00  # refcount table entries: bits 9-63
DIRTY, CORRUPT, DATA_FILE, COMPRESSION, EXTENDED_L2 = (1 << bit for bit in range(5))
KNOWN = DIRTY | CORRUPT | DATA_FILE | COMPRESSION | EXTENDED_L2
MAX_TABLE = 64 << 20  # a refcount or L1 table larger than this is not read (no such image here)


class Growth(NamedTuple):
    """``end``: where the clusters in use end now; ``highest``: the offset the image may
    reach once the merge has written into it."""

    end: int
    highest: int


def _unsure(path: str, why: str) -> VshxError:
    return VshxError(
        f"cannot tell how far the qcow2 on {path} may grow: {why}",
        f"nothing was changed; look at it: qemu-img check {path}",
        clean=True,
    )


def _read(path: str, offset: int, size: int) -> bytes:
    try:
        data = files.read(path, size, offset)
    except OSError as exc:
        raise _unsure(path, f"cannot read it: {exc.strerror}") from None
    if len(data) != size:
        raise _unsure(path, f"{size} bytes at {offset} are past its end")
    return data


def _last_in_use(block: bytes, bits: int) -> int | None:
    """The index of the last non-zero refcount in a refcount block of ``bits``-bit entries
    (below 8 bits, packed from a byte's least significant bits, as QEMU does), or None."""
    used = len(block.rstrip(b"\0"))
    if not used:
        return None
    if bits >= 8:
        return (used - 1) // (bits // 8)
    return (used - 1) * (8 // bits) + (block[used - 1].bit_length() - 1) // bits


def growth(path: str, writes: int, grows_to: int = 0) -> Growth:
    """Where the qcow2 ``path``'s clusters in use end, and the highest offset it may reach
    when ``writes`` bytes of guest data are written into it (its virtual size growing to
    ``grows_to`` if that is more: a commit resizes a smaller base).  VshxError when the image
    cannot be read well enough to tell.  With an external data file the guest clusters go
    there: the image grows by its L2 tables and refcounts only."""
    try:
        head = files.read(path, 104)
    except OSError as exc:
        raise _unsure(path, f"cannot read it: {exc.strerror}") from None
    if len(head) < 72 or head[:4] != MAGIC:
        raise _unsure(path, "it holds no qcow2 header")
    version, _bo, _bs, cluster_bits, size, _crypt, l1_size, l1_offset = struct.unpack(
        ">IQIIQIIQ", head[4:48]
    )
    reftable_offset, reftable_clusters = struct.unpack(">QI", head[48:60])
    if version not in (2, 3) or not 9 <= cluster_bits <= 21:
        raise _unsure(path, f"qcow2 version {version}, cluster bits {cluster_bits}")
    incompatible, refcount_order = 0, 4  # version 2: 16-bit refcounts, no feature bits
    if version == 3:
        if len(head) < 104:
            raise _unsure(path, "its version 3 header is cut short")
        (incompatible,) = struct.unpack(">Q", head[72:80])
        (refcount_order,) = struct.unpack(">I", head[96:100])
    if incompatible & ~KNOWN:
        raise _unsure(path, f"incompatible feature bits {incompatible & ~KNOWN:#x}")
    if incompatible & (DIRTY | CORRUPT):
        state = "marked corrupt" if incompatible & CORRUPT else "dirty (lazy refcounts)"
        raise _unsure(path, f"it is {state}, so its refcounts are not to be trusted")
    if refcount_order > 6:
        raise _unsure(path, f"refcount order {refcount_order}")
    cluster = 1 << cluster_bits
    if reftable_clusters * cluster > MAX_TABLE or l1_size * 8 > MAX_TABLE:
        raise _unsure(path, "its tables are larger than vshx reads")
    reftable = _read(path, reftable_offset, reftable_clusters * cluster)
    refs = [e & REFTABLE_OFFSET for e in struct.unpack(f">{len(reftable) // 8}Q", reftable)]
    bits = 1 << refcount_order
    per_block = cluster * 8 // bits
    highest_cluster = None
    for index in range(len(refs) - 1, -1, -1):
        if refs[index]:
            last = _last_in_use(_read(path, refs[index], cluster), bits)
            if last is not None:
                highest_cluster = index * per_block + last
                break
    if highest_cluster is None:
        raise _unsure(path, "its refcounts count no cluster in use")
    end = (highest_cluster + 1) * cluster
    l1 = struct.unpack(f">{l1_size}Q", _read(path, l1_offset, l1_size * 8)) if l1_size else ()
    # every L2 table maps this many guest bytes (16-byte entries with subclusters)
    per_table = cluster * cluster // (16 if incompatible & EXTENDED_L2 else 8)
    tables = -(-max(size, grows_to) // per_table)
    new_l1 = -(-tables * 8 // cluster) if tables > l1_size else 0  # a larger L1 table, moved
    data = -(-writes // cluster)
    # a new L2 table for each region without one that the written clusters may fall in
    l2 = min(data, tables - sum(1 for entry in l1 if entry & L1_OFFSET))
    # an external data file takes the guest clusters themselves; the image only its tables
    own = 0 if incompatible & DATA_FILE else data
    grown = end // cluster + own + l2 + new_l1
    # refcount blocks to count every cluster up to there (and themselves), as if none existed
    blocks = -(-grown // (per_block - 1))
    # and a new refcount table when the one there cannot point to that many blocks
    table = -(-blocks * 8 // cluster) + blocks if blocks > len(refs) else 0
    return Growth(end, (grown + blocks + table) * cluster)
