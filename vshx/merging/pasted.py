"""Lines typed or pasted into vshx that vshx checks as its own steps before they run.

A --dry-run script holds checks (``df ... | awk``, ``lsblk ... | awk`` for a
qcow2 on a block device, ``test ! -e``) and the ``rm -f --`` of a --delete step; pasted back,
each is done as its step does it, and nothing else is (a changing ``qemu-img`` line:
merging/pasted_writes.py).
"""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.merging import checks, preflight
from vshx.merging.savedstate import refuse_internal_snapshots
from vshx.plans import state_checks
from vshx.plans.plan import shell_line
from vshx.storage import host as files
from vshx.storage.chain import Chain, Layer
from vshx.storage.paths import has_image_suffix
from vshx.storage.qcow2 import MAGIC

if TYPE_CHECKING:
    from vshx.plans.context import Context as Session


def run_pasted_step(session: Session, words: list[str]) -> bool:
    """A printed plan's own non-virsh lines, pasted back: its checks (``df ... | awk``,
    ``lsblk ... | awk``, ``test ! -e``) and the ``rm -f --`` of a --delete step, each done
    as the step does it.  False when the words are none of those exact lines (vshx runs no
    other df, lsblk, test or rm)."""
    if words[0] == "rm" and words[1:3] == ["-f", "--"] and len(words) == 4:
        remove_pasted(session, words[3])
        return True
    if words[0] in ("df", "lsblk", "test", "find"):
        check = checks.pasted(words) if words[0] != "find" else state_checks.pasted_listing(words)
        if check is not None:
            if session.dry_run:
                session.print(check.equivalent())
            check.run()
            return True
    return False


def is_qcow2_header(head: bytes) -> bool:
    """A qcow2 image's header by content: the magic, version 2 or 3, a cluster size qemu
    allows (512 B to 2 MiB), and a header length that fits a version 3 header."""
    if len(head) < 72 or head[:4] != MAGIC:
        return False
    version, _offset, _size, cluster_bits = struct.unpack(">IQII", head[4:24])
    if version == 2:
        return bool(9 <= cluster_bits <= 21)
    if version == 3 and len(head) >= 104:
        (length,) = struct.unpack(">I", head[100:104])
        return bool(9 <= cluster_bits <= 21 and 104 <= length <= 1 << cluster_bits)
    return False


def remove_pasted(session: Session, path: str) -> None:
    """``rm -f -- FILE`` of a printed --delete step, pasted back into vshx: the same look
    again as the step itself.  Removed only: a disk image by its content (a qcow2 header),
    or a file a plan of this session deletes itself (a raw layer it merged away: raw has no
    header that tells a disk from any other file); and only when no domain, image or pool
    volume uses it and it holds no internal snapshot."""
    from vshx.storage.identity import identity

    if not files.lexists(path):
        return  # as rm -f
    key = identity(path)
    planned = key in session.deletes_planned  # a data file, whatever its name, included
    if not (preflight.is_qcow2(path) or has_image_suffix(path) or planned) or not files.isfile(
        path
    ):
        raise VshxError(
            f"not deleting {path}: vshx removes only disk images", "use rm yourself for others"
        )
    qcow2 = _qcow2_by_content(path)
    if not qcow2 and not planned:
        raise VshxError(
            f"not deleting {path}: vshx removes only disk images, and this file's content is "
            "not a qcow2 image's (a raw image has no header that tells it from any other "
            "file) nor did a plan of this session delete it",
            "look at it (qemu-img info FILE) and use rm yourself if nothing needs it",
        )
    refuse_internal_snapshots(path, None, "that rm would delete it")
    index = preflight.UsageIndex(session, Chain([Layer(os.path.abspath(path), "", 0)]))
    users = index.users_of(path)
    if users:
        hint = f"merge it out of those chains first ({index.scanned()})"
        if any(" snapshot " in user for user in users):  # nu12 #9: a printed --delete plan
            hint = (
                "a pasted line is judged alone: the command that printed it knew where those "
                "snapshots' moments went, the files alone do not show it; the file is kept "
                "(delete it once `vshx snapshot-list` shows no moment in it); run the command "
                f"itself rather than its script ({index.scanned()})"
            )
        raise VshxError(f"not deleting {path}: still used by {'; '.join(users)}", hint)
    if qcow2:
        _release_data_file(session, path)
    if session.dry_run:
        session.print(shell_line(["rm", "-f", "--", path]))
        return
    if identity(path) != key:
        raise VshxError(
            f"not deleting {path}: another file is there now", "nothing was deleted; look at it"
        )
    session.info(f"deleting {path}")
    files.unlink(path)


def _release_data_file(session: Session, path: str) -> None:
    """The image about to go names an external data file: its own printed ``rm`` line,
    pasted next, may remove it (the users of that file are looked at then), as the plan's
    step does; a data file vshx would not delete with its layer stays unreleased."""
    from vshx.merging.data_files import named_data_file

    data, _why = named_data_file(path)
    if data is not None:
        session.deletes_planned.add(data.key)


def _qcow2_by_content(path: str) -> bool:
    try:
        return is_qcow2_header(files.read(path, 104))
    except OSError as exc:
        raise VshxError(
            f"not deleting {path}: cannot read it to see what it is: {exc.strerror}",
            "vshx refuses what it cannot check",
        ) from exc
