"""Which layer of a qcow2 chain holds each guest byte, read from the L1/L2 tables.

The answer ``qemu-img map --output=json`` gives as its ``"data": true`` extents (depth, length),
without starting a process.  Each layer's L2 entries say, per cluster, "data here" (normal or
compressed), "zeros here" (the zero flag) or "ask the layer below"; composing the layers top
down gives every guest byte to the first layer that answers for it, so data held by several
layers is counted once, as a block job copies it once.  A layer also answers (with zeros) for
everything past its own virtual size, as QEMU does not read below it there.

Where only qemu-img can tell, ``data_extents`` returns None and the caller runs ``qemu-img
map``: a layer that is not qcow2 (a raw base), with an external data file, extended
L2 entries (subclusters), marked corrupt, with unknown incompatible features, a chain that the
headers cannot follow (``qcow2.read_chain`` is None), or a layer with more than ``MAX_ENTRIES``
L2 entries in use (qemu-img is faster there).  An encrypted layer (AES or LUKS) is read as any
other: qcow2 encrypts guest data only, its tables are plain, and qemu-img could not open it
without the secret libvirt keeps.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from itertools import compress

from vshx.storage.qcow2 import MAGIC, read_chain

OFFSET_MASK = 0x00FFFFFFFFFFFE00  # L1 and standard L2 entries: bits 9-55 hold the offset
COMPRESSED = 1 << 62
ZERO = 1  # L2 bit 0 (qcow2 v3): the cluster reads as zeros
# incompatible features the reader copes with: dirty (lazy refcounts), compression type
KNOWN_INCOMPATIBLE = (1 << 0) | (1 << 3)

# past this many L2 entries in use in one layer (32 GiB of guest space at 64 KiB clusters)
# qemu-img's C loop, started in the background, beats reading them here entry by entry
MAX_ENTRIES = 1 << 19

Run = tuple[int, int, bool]  # guest [start, end), True = data, False = zeros
_WORD = array("Q")


def _layer_runs(path: str) -> tuple[int, list[Run]] | None:
    """(virtual size, the runs of clusters this layer answers for); None: ask qemu-img."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(104)
            if len(head) < 72 or head[:4] != MAGIC:
                return None
            version, _bo, _bs, cluster_bits, size, crypt, l1_size, l1_offset = struct.unpack(
                ">IQIIQIIQ", head[4:48]
            )
            if version not in (2, 3) or crypt not in (0, 1, 2) or not 9 <= cluster_bits <= 21:
                return None
            if version == 3:
                if len(head) < 104:
                    return None
                (incompatible,) = struct.unpack(">Q", head[72:80])
                if incompatible & ~KNOWN_INCOMPATIBLE:
                    return None  # corrupt, external data file, subclusters, or unknown
            file_size = os.fstat(handle.fileno()).st_size
            if l1_offset + l1_size * 8 > file_size:
                return None
            handle.seek(l1_offset)
            l1 = struct.unpack(f">{l1_size}Q", handle.read(l1_size * 8))
            cluster = 1 << cluster_bits
            per_table = cluster // 8
            if sum(1 for entry in l1 if entry & OFFSET_MASK) * per_table > MAX_ENTRIES:
                return None
            empty = bytes(cluster)
            runs: list[Run] = []
            for index, l1_entry in enumerate(l1):
                table_at = l1_entry & OFFSET_MASK
                if not table_at:
                    continue
                if table_at + cluster > file_size:
                    return None
                handle.seek(table_at)
                raw = handle.read(cluster)
                if raw == empty:
                    continue
                first = index * per_table * cluster
                if first >= size:
                    break
                table = _entries(raw)
                in_size = min(per_table, -(-(size - first) // cluster))  # slots below the end
                for slot in compress(range(in_size), table):  # entries in use only (C loop)
                    entry = table[slot]
                    if entry & COMPRESSED:
                        data = True
                    elif entry & ZERO:
                        data = False
                    elif entry & OFFSET_MASK:
                        data = True
                    else:
                        continue  # unallocated: the layer below answers
                    start = first + slot * cluster
                    end = min(start + cluster, size)
                    if runs and runs[-1][1] == start and runs[-1][2] == data:
                        runs[-1] = (runs[-1][0], end, data)
                    else:
                        runs.append((start, end, data))
    except OSError:
        return None
    return size, runs


def _entries(raw: bytes) -> Sequence[int]:
    """A table of big-endian 64-bit entries as integers."""
    if _WORD.itemsize != 8:  # not where vshx runs (Linux): decode entry by entry
        return struct.unpack(f">{len(raw) // 8}Q", raw)
    table = array("Q", raw)
    if sys.byteorder == "little":
        table.byteswap()
    return table


def _subtract(start: int, end: int, covered: list[tuple[int, int]], ends: list[int]) -> int:
    """Bytes of [start, end) that no interval of ``covered`` (sorted, disjoint; ``ends`` their
    ends) holds."""
    free = end - start
    for c_start, c_end in covered[bisect_right(ends, start) :]:
        if c_start >= end:
            break
        overlap = min(end, c_end) - max(start, c_start)
        if overlap > 0:
            free -= overlap
    return free


def _union(covered: list[tuple[int, int]], more: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(covered + more):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def holds_nothing(path: str) -> bool:
    """The qcow2 image at ``path`` (on this machine) maps no cluster of its own, neither data
    nor zeros: it shows exactly what its backing file shows.  False when it maps one, or when
    its tables cannot be read here (fail closed)."""
    layer = _layer_runs(path)
    return layer is not None and not layer[1]


def data_extents(path: str) -> list[tuple[int, int]] | None:
    """(depth, length) of every byte the guest sees through ``path`` that some layer holds as
    data, depth 0 = ``path`` itself; None where only ``qemu-img map`` can tell."""
    chain = read_chain(path)
    if not chain or any(entry["format"] != "qcow2" for entry in chain):
        return None
    top_size = int(chain[0]["virtual-size"])
    covered: list[tuple[int, int]] = []
    extents: list[tuple[int, int]] = []
    for depth, entry in enumerate(chain):
        layer = _layer_runs(str(entry["filename"]))
        if layer is None:
            return None
        size, runs = layer
        ends = [c_end for _c_start, c_end in covered]
        for start, end, data in runs:
            end = min(end, top_size)
            if data and end > start:
                length = _subtract(start, end, covered, ends)
                if length:
                    extents.append((depth, length))
        spans = [(start, end) for start, end, _data in runs]
        if size < top_size:
            spans.append((size, top_size))  # past its end this layer reads as zeros
        covered = _union(covered, spans)
    return extents
