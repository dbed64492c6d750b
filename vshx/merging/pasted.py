"""A printed plan's own lines that are not virsh or qemu-img, pasted back into vshx.

A --dry-run script holds checks (``df ... | awk``, ``test ! -e``) and the ``rm -f --`` of a
--delete step; pasted back, each is done as its step does it, and nothing else is.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.merging import checks, preflight
from vshx.merging.savedstate import refuse_internal_snapshots
from vshx.plans.plan import shell_line
from vshx.storage import host as files
from vshx.storage.chain import Chain, Layer
from vshx.storage.paths import has_image_suffix

if TYPE_CHECKING:
    from vshx.plans.context import Context as Session


def run_pasted_step(session: Session, words: list[str]) -> bool:
    """A printed plan's own non-virsh lines, pasted back: its checks (``df ... | awk``,
    ``test ! -e``) and the ``rm -f --`` of a --delete step, each done as the step does it.
    False when the words are none of those exact lines (vshx runs no other df, test or rm)."""
    if words[0] == "rm" and words[1:3] == ["-f", "--"] and len(words) == 4:
        remove_pasted(session, words[3])
        return True
    if words[0] in ("df", "test"):
        check = checks.pasted(words)
        if check is not None:
            if session.dry_run:
                session.print(check.equivalent())
            check.run()
            return True
    return False


def remove_pasted(session: Session, path: str) -> None:
    """``rm -f -- FILE`` of a printed --delete step, pasted back into vshx: the same look
    again as the step itself; only a disk image (qcow2 by header, or an image suffix) that no
    domain, image or pool volume uses any more is removed."""
    if not files.lexists(path):
        return  # as rm -f
    if not (preflight.is_qcow2(path) or has_image_suffix(path)) or not files.isfile(path):
        raise VshxError(
            f"not deleting {path}: vshx removes only disk images", "use rm yourself for others"
        )
    refuse_internal_snapshots(path, None, "that rm would delete it")
    index = preflight.UsageIndex(session, Chain([Layer(os.path.abspath(path), "", 0)]))
    users = index.users_of(path)
    if users:
        raise VshxError(
            f"not deleting {path}: still used by {'; '.join(users)}",
            f"merge it out of those chains first ({index.scanned()})",
        )
    if session.dry_run:
        session.print(shell_line(["rm", "-f", "--", path]))
        return
    session.info(f"deleting {path}")
    files.unlink(path)
