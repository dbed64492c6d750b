"""libvirt access: connections with an event loop, domain lookup, and a disk's chain.

libvirt's default event implementation must be registered before a connection opens for
block-job events (and keepalives) to arrive, so every connection goes through here.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.storage.libvirt_lazy import libvirt

if TYPE_CHECKING:
    from vshx.storage import chain as chains

_event_loop_lock = threading.Lock()
_event_loop_started = False


def _ignore_libvirt_errors(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; vshx reports them itself."""


def ensure_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread, once."""
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.registerErrorHandler(_ignore_libvirt_errors, None)
        libvirt.virEventRegisterDefaultImpl()
        thread = threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True)
        thread.start()
        _event_loop_started = True


def _run_event_loop() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


def open_connection(uri: str, events: bool = True) -> libvirt.virConnect:
    """Open a connection; with ``events`` it can deliver block-job and lifecycle events."""
    if events:
        ensure_event_loop()
    else:
        libvirt.registerErrorHandler(_ignore_libvirt_errors, None)
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise VshxError(
            f"cannot connect to {uri}: {exc.get_error_message()}",
            "is libvirtd running? `make bootstrap` starts it (or: virtlogd -d; libvirtd -d)",
        ) from exc


def lookup_domain(conn: libvirt.virConnect, name: str) -> libvirt.virDomain:
    """Find a domain by name, id or UUID, as virsh does."""
    lookups = [conn.lookupByName]
    if name.isdigit():
        lookups.append(lambda n: conn.lookupByID(int(n)))
    if len(name) == 36 and name.count("-") == 4:
        lookups.append(conn.lookupByUUIDString)
    for lookup in lookups:
        try:
            return lookup(name)
        except libvirt.libvirtError:
            continue
    raise VshxError(f"domain {name!r} not found", "list them with: list --all")


def is_running(dom: libvirt.virDomain) -> bool:
    return dom.isActive() == 1


# virDomainState values (stable ABI), written out so that this table costs no libvirt import
STATE_NAMES = {
    0: "no state",
    1: "running",
    2: "idle",
    3: "paused",
    4: "in shutdown",
    5: "shut off",
    6: "crashed",
    7: "pmsuspended",
}


def state_name(dom: libvirt.virDomain) -> str:
    return STATE_NAMES.get(dom.state()[0], "unknown")


def domain_disks(dom: libvirt.virDomain) -> list[chains.DiskSource]:
    """Disks from the live XML when running (with <backingStore>), else the persistent XML."""
    from vshx.storage import chain as chains

    return chains.disks_from_xml(dom.XMLDesc(0))


def find_disk(dom: libvirt.virDomain, target: str) -> chains.DiskSource:
    disks = domain_disks(dom)
    for disk in disks:
        if target in (disk.target, disk.source):
            return disk
    names = ", ".join(d.target for d in disks) or "none"
    raise VshxError(f"domain {dom.name()!r} has no disk {target!r}", f"its disks: {names}")


def domain_chain(dom: libvirt.virDomain, target: str) -> chains.Chain:
    """The chain of one disk of a domain: order and indexes from libvirt, sizes from qemu-img."""
    from vshx.storage import chain as chains
    from vshx.storage import qemuimg

    disk = find_disk(dom, target)
    if not disk.source:
        raise VshxError(f"disk {disk.target} of {dom.name()!r} has no source file (empty drive?)")
    layers = chains.chain_from_info(qemuimg.info_chain(disk.source), disk.source)
    running = is_running(dom)
    if running:
        layers = chains.merge_live_indexes(layers, disk)
    return chains.Chain(layers, domain=dom.name(), disk=disk.target, live=running)


def block_job_info(dom: libvirt.virDomain, disk: str) -> dict[str, int]:
    try:
        return dom.blockJobInfo(disk, 0) or {}
    except libvirt.libvirtError:
        return {}
