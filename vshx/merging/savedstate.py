"""Saved state is a user: a saved RAM image goes with the disk contents it was taken on.

A managed-save image (``virsh managedsave``) restores onto the domain's chain as it is; a
snapshot with memory state restores onto its disk moment (the file that was active when it was
taken).  A plan that changes what such RAM would find on disk is refused before anything runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.storage.chain import Layer, canonical
from vshx.storage.snapshots import memory_moments

if TYPE_CHECKING:
    from vshx.plans.target import Target


def refuse_saved_state(target: Target, changed: list[Layer]) -> None:
    """Refuse a plan on ``target`` that changes ``changed`` (files it writes into, merges out
    of the chain or deletes) while saved RAM depends on them."""
    dom = target.dom
    if dom is None:
        return
    name, disk = dom.name(), target.chain.disk or ""
    if not target.live and dom.hasManagedSaveImage(0):
        raise VshxError(
            f"{name} has saved state (a managed-save image, virsh managedsave): its RAM "
            f"restores onto {disk}'s chain as it is now, so vshx does not change that chain",
            f"either start it (virsh start {name} restores the RAM) and shut it down cleanly "
            f"(virsh shutdown {name}), or discard the saved RAM: virsh managedsave-remove {name}",
        )
    changing = {layer.canonical for layer in changed}
    for snap, snap_disk, path in memory_moments(dom):
        if snap_disk == disk and canonical(path) in changing:
            raise VshxError(
                f"snapshot {snap} of {name} holds memory state taken on {path} ({disk}); this "
                "merge changes that file, so reverting to it would pair its RAM with other "
                "disk contents",
                f"delete that snapshot first (virsh snapshot-delete {name} {snap}, or with "
                "--metadata to keep its files), or merge so that this file is left as it is",
            )
