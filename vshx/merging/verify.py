"""Proof that an unsafe (pointer-only) rebase changes nothing the image's guest sees.

``qemu-img rebase -u`` is correct only if the old and the new backing show the image the same
data wherever the image itself does not allocate.  First a plain ``qemu-img compare`` of the
two backings; if they differ somewhere the image allocates anyway, compare again through two
throw-away overlays in which exactly the image's own extents are zeroed in both, so only the
ranges the guest would actually read from the backing count.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator

from vshx.errors import VshxError
from vshx.storage import host as files
from vshx.storage import qemuimg
from vshx.storage.chain import Layer

MISMATCH = re.compile(r"offset (\d+)")


def _compare(first: str, first_fmt: str, second: str, second_fmt: str) -> int | None:
    argv = compare_argv(first, first_fmt, second, second_fmt)
    proc = qemuimg.start(argv)  # where the images are (over ssh on a remote host)
    out, err = proc.communicate()
    if proc.returncode == 0:
        return None
    match = MISMATCH.search(out + err)
    if proc.returncode == 1 and match:
        return int(match.group(1))
    raise VshxError(
        f"qemu-img compare failed: {(err or out).strip()}",
        "vshx proves an unsafe rebase by comparing the old and the new backing file and "
        "could not: check that each exists and is the format given (--backing-format; "
        "qemu-img info shows it); nothing was changed",
    )


def own_extents(image: Layer) -> Iterator[tuple[int, int]]:
    """(start, length) of the ranges allocated in the image itself (depth 0), merged."""
    out = qemuimg.run(["qemu-img", "map", "--output=json", "-U", "-f", image.format, image.path])
    start = length = None
    for entry in json.loads(out):
        if entry.get("depth") != 0 or not entry.get("present", True):
            continue
        if start is not None and length is not None and start + length == entry["start"]:
            length += entry["length"]
            continue
        if start is not None and length is not None:
            yield start, length
        start, length = entry["start"], entry["length"]
    if start is not None and length is not None:
        yield start, length


def _masked_overlay(
    directory: str,
    name: str,
    backing: str | None,
    backing_fmt: str,
    size: int,
    extents: list[tuple[int, int]],
) -> str:
    path = os.path.join(directory, name)
    create = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing:
        create += ["-F", backing_fmt, "-b", backing]
    qemuimg.run(create + [path, str(size)])
    for chunk in range(0, len(extents), 256):
        commands: list[str] = []
        for start, length in extents[chunk : chunk + 256]:
            commands += ["-c", f"write -q -z {start} {length}"]
        qemuimg.run(["qemu-io", "-f", "qcow2", *commands, path])
    return path


def compare_argv(first: str, first_fmt: str, second: str, second_fmt: str) -> list[str]:
    return ["qemu-img", "compare", "-U", "-f", first_fmt, "-F", second_fmt, first, second]


def backings_identical(first: str, first_fmt: str, second: str, second_fmt: str) -> bool:
    """True when the two images show the same data everywhere (the plain compare passes)."""
    return _compare(first, first_fmt, second, second_fmt) is None


def first_visible_difference(
    image: Layer, old: str | None, old_fmt: str | None, new: str | None, new_fmt: str | None
) -> int | None:
    """The first offset where the guest of ``image`` would read different data, or None."""
    size = image.virtual_size or 0
    with files.temporary_directory("vshx-verify-") as tmp:
        empty = os.path.join(tmp, "empty.qcow2")
        if old is None or new is None:
            qemuimg.run(["qemu-img", "create", "-q", "-f", "qcow2", empty, str(size)])
        old_path, old_f = (old, old_fmt or "raw") if old else (empty, "qcow2")
        new_path, new_f = (new, new_fmt or "raw") if new else (empty, "qcow2")
        offset = _compare(old_path, old_f, new_path, new_f)
        if offset is None:
            return None
        extents = list(own_extents(image))
        if not any(start <= offset < start + length for start, length in extents):
            return offset
        masked_old = _masked_overlay(tmp, "old.qcow2", old_path, old_f, size, extents)
        masked_new = _masked_overlay(tmp, "new.qcow2", new_path, new_f, size, extents)
        return _compare(masked_old, "qcow2", masked_new, "qcow2")
