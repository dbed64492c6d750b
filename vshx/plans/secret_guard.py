"""Refuse, before anything changes, a qemu-img step on a chain with an encrypted layer.

qemu-img opens an encrypted qcow2 layer (AES or LUKS: the header's crypt_method) only with
its secret (``--object secret,...`` and ``encrypt.key-secret``), which libvirt keeps for the
domain and gives QEMU itself.  vshx passes no secrets, so such a step would fail after the
plan's earlier steps ran ("Parameter 'encrypt.key-secret' is required for cipher", seen with
QEMU 7.2 on a LUKS base under plain overlays).  A running domain's merges are libvirt block
jobs, which have the secret: the plan is refused whole, naming that way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.plans.plan import shell_line
from vshx.storage.qcow2 import encrypted

if TYPE_CHECKING:
    from vshx.plans.plan import Plan


def refuse_encrypted_offline(plan: Plan) -> None:
    """Refuse ``plan`` when it runs qemu-img on a chain that holds an encrypted layer."""
    if plan.target is None or not any(step.argv[:1] == ["qemu-img"] for step in plan.steps):
        return
    locked = [layer.name for layer in plan.target.chain.layers if encrypted(layer.path)]
    if not locked:
        return
    chain = plan.target.chain
    by_hand = "run qemu-img yourself with --object secret,... and the image's encrypt.key-secret"
    way = (
        f"start the domain ({shell_line(['virsh', 'start', chain.domain or ''])}): vshx then "
        "merges with libvirt's "
        "block jobs, which have the secret"
        if chain.domain and not plan.target.live
        else f"this plan needs qemu-img there; {by_hand}"
    )
    raise VshxError(
        f"{', '.join(locked)} is encrypted: qemu-img cannot open it without its secret, which "
        "vshx does not pass",
        f"nothing was changed; {way}",
    )
