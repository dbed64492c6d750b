"""The last step of every offline plan on a domain: its persistent definition names the new chain.

libvirt starts a shut-off domain on its persistent definition.  When that ``<disk>`` pins a
``<backingStore>`` chain (snapshots taken while it ran leave one), a merge done with qemu-img
must also be written there, or the domain starts on the old chain (or not at all once the
merged-away files are deleted).  A definition that pins no chain keeps pinning none: libvirt
reads the new headers.  Printed as ``virsh update-device D /dev/stdin --config`` with the
``<disk>`` XML as a here-document; libvirt keeps a ``<backingStore>`` chain given that way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.plans.plan import Step, virsh
from vshx.storage import definition, virt
from vshx.storage.chain import Chain, canonical
from vshx.storage.libvirt_lazy import libvirt

if TYPE_CHECKING:
    from vshx.merging.target import Target
    from vshx.plans.plan import Plan
    from vshx.shell.session import Session


def steps(session: Session, target: Target, plan: Plan) -> list[Step]:
    """The Step that makes a shut-off domain's persistent definition name exactly
    ``plan.after`` (none when it already does, for a live plan, or for a bare image).

    Every offline plan that changes a domain's chain calls this once, after its qemu-img
    steps and before any ``rm`` (whose look-again reads the definition).
    """
    after = plan.after
    if target.dom is None or target.live or after is None or not after.layers:
        return []
    dom, disk = target.dom, target.chain.disk or ""
    xml = definition.persistent_xml(dom)
    now = definition.find(xml, disk)
    if now is None:
        raise VshxError(f"disk {disk} is not in the persistent definition of {dom.name()}")
    if _names(now, after):
        return []
    before = plan.before or target.chain
    new_xml = definition.disk_xml(xml, disk, _layers(after), now.pinned)
    old_xml = definition.disk_xml(xml, disk, _layers(before), now.pinned)
    if after.active.canonical != before.active.canonical:
        what = f"switch {dom.name()} {disk} to {after.active.name} in the persistent definition"
    else:
        what = f"make the persistent definition of {dom.name()} {disk} name the new chain"
    return [
        Step(
            f"{what} ({after.arrows()})",
            virsh(session.uri, "update-device", dom.name(), "/dev/stdin", "--config"),
            action=_update_unless_started(dom, disk, new_xml, old_xml, after, before),
            stdin=new_xml,
        )
    ]


def _layers(chain: Chain) -> list[tuple[str, str]]:
    return [(layer.path, layer.format) for layer in chain.layers]


def _names(defined: definition.Defined, chain: Chain) -> bool:
    """Whether a definition already names exactly ``chain`` (an unpinned one: its source)."""
    files = [canonical(path) for path in defined.files if path]
    wanted = [layer.canonical for layer in chain.layers]
    return files == (wanted if defined.pinned else wanted[:1])


def _update_unless_started(
    dom: libvirt.virDomain, disk: str, new_xml: str, old_xml: str, after: Chain, before: Chain
) -> Callable[[], None]:
    """Write the new ``<disk>``, then look again: a domain that started in between runs on
    the old chain, so its definition goes back to it (its writes live there)."""

    def action() -> None:
        dom.updateDeviceFlags(new_xml, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        if dom.isActive() and virt.find_disk(dom, disk).source == before.active.path:
            dom.updateDeviceFlags(old_xml, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            raise VshxError(
                f"{dom.name()} was started while the offline plan ran; its definition stays on "
                f"{before.active.name}, which it now writes",
                "nothing was deleted and the guest lost nothing; merge again once it is shut "
                "off, or live while it runs",
            )
        now = definition.find(definition.persistent_xml(dom), disk)
        if now is None or not _names(now, after) and now.pinned:
            raise VshxError(
                f"libvirt did not keep the new chain in the definition of {dom.name()} {disk}",
                f"see: virsh dumpxml --inactive {dom.name()}; nothing was deleted",
            )

    return action
