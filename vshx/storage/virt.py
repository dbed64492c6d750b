"""libvirt access: connections with an event loop, domain lookup, and a disk's chain.

libvirt's default event implementation must be registered before a connection opens for
block-job events (and keepalives) to arrive, so every connection goes through here.
"""

from __future__ import annotations

import os
import re
import shlex
import threading
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, NamedTuple

from vshx.errors import VshxError
from vshx.spec.render import printable, quoted
from vshx.storage import host as files
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


KEEPALIVE_INTERVAL = 2  # seconds between keepalive probes
KEEPALIVE_COUNT = 3  # unanswered probes before libvirt closes the connection (~8 s)
CONNECT_TIMEOUT = 10.0  # seconds a daemon may take to accept a connection


def open_connection(uri: str, events: bool = True) -> libvirt.virConnect:
    """Open a connection; with ``events`` it can deliver block-job and lifecycle events and
    uses keepalive, so a daemon that stops answering is an error within seconds, not a hang."""
    if events:
        ensure_event_loop()
    else:
        libvirt.registerErrorHandler(_ignore_libvirt_errors, None)
    opened: list[libvirt.virConnect] = []
    failed: list[libvirt.libvirtError] = []

    def connect() -> None:  # in a thread: a frozen daemon accepts, then never answers
        try:
            opened.append(libvirt.open(uri))
        except libvirt.libvirtError as exc:
            failed.append(exc)

    worker = threading.Thread(target=connect, name="libvirt-connect", daemon=True)
    worker.start()
    worker.join(CONNECT_TIMEOUT)
    if failed or not opened:
        why = failed[0].get_error_message() if failed else f"no answer in {CONNECT_TIMEOUT:.0f} s"
        raise VshxError(f"cannot connect to {uri}: {why}", connect_hint(uri, why))
    conn = opened[0]
    if events:
        try:
            conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
        except libvirt.libvirtError:
            pass  # a local driver without keepalive (test:///) needs none
    return conn


def connect_hint(uri: str, why: str = "") -> str:
    """What would let this user reach this URI; never `make`: a user may have no checkout."""
    import os

    if "URI path" in why or "no connection driver" in why:  # libvirt cannot read the URI
        return (
            "check the URI: qemu:///system (root's daemon), qemu:///session (your own), or "
            "qemu+ssh://[user@]host/system for another host"
        )

    host = uri.partition("://")[2].partition("/")[0].rpartition("@")[2]
    if host:  # another machine's daemon (qemu+ssh://, qemu+tcp://, qemu://host/...)
        transport = uri.partition("://")[0].partition("+")[2] or "tls"
        how = (
            "that ssh logs in there without a prompt (a key)"
            if transport in ("ssh", "libssh", "libssh2")
            else f"that libvirt there accepts {transport} connections (its listen settings)"
        )
        return (
            f"{printable(uri)} reaches its daemon over {transport} at {printable(host)}: check "
            f"{how} and that libvirtd runs there; nothing needs starting on this machine"
        )

    from vshx.storage.default_uri import why_default

    chosen = "" if os.environ.get("LIBVIRT_DEFAULT_URI") else f" ({why_default()})"
    if uri.startswith("qemu:///session"):
        return (
            "the session daemon runs as you and starts on demand: it needs the Debian packages "
            "libvirt-daemon, libvirt-daemon-driver-qemu and qemu-system-x86"
        )
    if uri.startswith("qemu:///system") and os.geteuid() != 0:
        return (
            f"as a user who is not root, qemu:///system{chosen} needs membership of the libvirt "
            "group (sudo adduser $USER libvirt, then log in again); or work on your own "
            'qemu:///session: vshx -c qemu:///session, or uri_default = "qemu:///session" in '
            "~/.config/libvirt/libvirt.conf"
        )
    return (
        "is libvirtd running and answering? as root: virtlogd -d; libvirtd -d (Debian packages "
        "libvirt-daemon-system, or libvirt-daemon and libvirt-daemon-driver-qemu)"
    )


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
        except UnicodeEncodeError:  # bytes that are not UTF-8: no libvirt name holds them
            break
    raise VshxError(f"domain {quoted(name)} not found", "list them with: list --all")


def domains_with_disks(
    conn: libvirt.virConnect, flags: int = 0
) -> list[tuple[libvirt.virDomain, list[chains.DiskSource]]]:
    """Every domain with its disks as a usage scan reads them (``every_defined_disk``); one
    undefined while we look is skipped, not an error (a busy host defines and undefines
    domains all the time)."""
    doms = conn.listAllDomains(flags)
    read: list[list[chains.DiskSource] | Exception | None] = [None] * len(doms)
    slots = iter(range(len(doms)))
    take = threading.Lock()

    def reader() -> None:
        while True:
            with take:
                i = next(slots, None)
            if i is None:
                return
            try:
                read[i] = every_defined_disk(doms[i])
            except Exception as exc:  # raised below, in the caller's thread
                read[i] = exc

    # the XML reads go out together (libvirt answers them on its worker threads), so one
    # domain that libvirt holds locked (starting, saving) delays the scan once, not per domain
    helpers = [threading.Thread(target=reader, daemon=True) for _ in range(min(3, len(doms)))]
    for thread in helpers:
        thread.start()
    reader()
    for thread in helpers:
        thread.join()
    found = []
    for dom, disks in zip(doms, read, strict=True):
        if isinstance(disks, libvirt.libvirtError):
            if disks.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise disks
            continue
        if isinstance(disks, Exception):
            raise disks
        if disks is None:  # never read: fail closed rather than miss a user
            raise VshxError(f"cannot read the definition of domain {quoted(dom.name())}")
        found.append((dom, disks))
    return found


class PoolRead(NamedTuple):
    """A storage pool as a usage scan reads it."""

    name: str
    target: str | None  # its target directory (a path in its XML), if it names one
    active: bool
    volumes: list[tuple[str, str]]  # (volume, path); an inactive pool's: none (libvirt lists none)
    kind: str  # its type: dir, fs, netfs, logical...


def pools_with_volumes(conn: libvirt.virConnect) -> list[PoolRead]:
    """Every storage pool, active or not, with its volumes (an active one's)."""
    found: list[PoolRead] = []
    for pool in conn.listAllStoragePools(0):
        try:
            found.append(_pool_read(pool))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                raise
            # undefined while the scan read it: gone, as a domain that vanishes is
    return found


def _volume_read(vol: libvirt.virStorageVol) -> tuple[str, str] | None:
    """A volume's name and path; None for one deleted since its pool listed it."""
    try:
        return vol.name(), vol.path()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise
        return None


def _pool_read(pool: libvirt.virStoragePool) -> PoolRead:
    """One pool; one stopped between the listing and its volumes reads as the inactive
    pool it now is (its directory is still scanned), not as a failed scan."""
    xml = ET.fromstring(pool.XMLDesc(0))
    active = bool(pool.isActive())
    volumes: list[tuple[str, str]] = []
    if active:
        try:
            volumes = [named for vol in pool.listAllVolumes(0) if (named := _volume_read(vol))]
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID or pool.isActive():
                raise
            active = False
    kind = xml.get("type", "")
    return PoolRead(pool.name(), xml.findtext("./target/path"), active, volumes, kind)


HostRead = tuple[
    list[tuple["libvirt.virDomain", list["chains.DiskSource"]]], "list[PoolRead] | VshxError"
]


def read_host(conn: libvirt.virConnect) -> HostRead:
    """What a usage scan asks libvirt: every domain with its disks, every pool with its
    volumes (a pool error is kept, to be raised where the pools are needed)."""
    domains = domains_with_disks(conn)
    try:
        pools: list[PoolRead] | VshxError = pools_with_volumes(conn)
    except libvirt.libvirtError as exc:
        pools = VshxError(
            f"cannot read the storage pools: {exc.get_error_message()}",
            "vshx refuses what it cannot check; try again, or --force",
        )
    return domains, pools


def is_running(dom: libvirt.virDomain) -> bool:
    active: int = dom.isActive()
    return active == 1


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


# virDomainBlockJobType values, by the name virsh blockjob --info prints
JOB_TYPES = {1: "pull", 2: "copy", 3: "commit", 4: "active commit", 5: "backup"}


def state_name(dom: libvirt.virDomain) -> str:
    return STATE_NAMES.get(dom.state()[0], "unknown")


def domain_disks(dom: libvirt.virDomain) -> list[chains.DiskSource]:
    """Disks from the live XML when running (with <backingStore>), else the persistent XML."""
    from vshx.storage import chain as chains

    return chains.disks_from_xml(dom.XMLDesc(0), f"domain {dom.name()}")


def every_defined_disk(dom: libvirt.virDomain) -> list[chains.DiskSource]:
    """A domain's disks as it runs, and, for a running domain, the disks its persistent
    definition names otherwise (``persistent_only``): it boots on those next time, so their
    files are in use too.  As a usage scan reads them: a disk whose file name has a line break
    or tab is listed once with each file it may name (chain.disks_from_xml's "both"), not
    refused, so that one such domain does not stop every merge on the host."""
    from vshx.storage import chain as chains

    xml = dom.XMLDesc(0)
    disks = chains.disks_from_xml(xml, f"domain {dom.name()}", "both")
    if not is_live_xml(xml):  # shut off: that was the persistent one
        return disks
    live = {(disk.target, disk.source) for disk in disks}
    defined = chains.disks_from_xml(
        dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), f"domain {dom.name()}", "both"
    )
    return disks + [
        disk._replace(persistent_only=True)
        for disk in defined
        if (disk.target, disk.source) not in live
    ]


def find_disk(dom: libvirt.virDomain, target: str, xml: str | None = None) -> chains.DiskSource:
    """The disk ``target`` (a target name or a source path) of the domain, from ``xml`` when
    the caller has just read it (``XMLDesc(0)``)."""
    from vshx.storage import chain as chains

    disks = chains.disks_from_xml(dom.XMLDesc(0) if xml is None else xml, f"domain {dom.name()}")
    for disk in disks:
        if target in (disk.target, disk.source):
            return disk
    # a source file named from the shell's dir (asked where the images are)
    if os.sep in target or files.exists(target):
        from vshx.storage import chain as chains

        wanted = chains.canonical(target)
        for disk in disks:
            if disk.source and chains.canonical(disk.source) == wanted:
                return disk
    names = ", ".join(d.target for d in disks) or "none"
    raise VshxError(
        f"domain {quoted(dom.name())} has no disk {quoted(target)}", f"its disks: {names}"
    )


def domain_chain(
    dom: libvirt.virDomain, target: str, *, definition: bool = True, xml: str | None = None
) -> chains.Chain:
    """The chain of one disk of a domain: order and indexes from libvirt, sizes from qemu-img.

    With ``definition`` (for planning), a definition that names other files than the headers
    (the live one when running, else the persistent one libvirt will start on) is refused.
    ``xml``: the domain's ``XMLDesc(0)``, when the caller has just read it.
    """
    from vshx.storage import chain as chains
    from vshx.storage import qemuimg

    xml = dom.XMLDesc(0) if xml is None else xml
    disk = find_disk(dom, target, xml)
    if disk.kind not in ("file", "block"):
        what = f" ({disk.remote})" if disk.remote else ""
        raise VshxError(
            f"disk {disk.target} of {quoted(dom.name())} is a {disk.kind} disk{what}: vshx reads "
            "and merges the chains of local file and block disks only",
            "merge it where its storage is (qemu-img on that server), or use virsh blockcommit "
            "/ blockpull on the running domain, which libvirt runs for any disk type",
        )
    if not disk.source:
        raise VshxError(
            f"disk {disk.target} of {quoted(dom.name())} has no source file (empty drive?)",
            "an empty drive has no chain; its disks and their files: virsh domblklist "
            f"{shlex.join([dom.name()])} --details",
        )
    if disk.foreign_backing:
        raise VshxError(
            f"disk {disk.target} of {quoted(dom.name())} has a layer that is no local file or "
            f"block device ({', '.join(disk.foreign_backing)}): vshx reads and merges chains of "
            "local file and block layers only",
            "use virsh blockcommit / blockpull on the running domain, or virsh "
            "snapshot-delete: libvirt resolves pool volumes and network layers itself",
        )
    layers = chains.chain_from_info(qemuimg.info_chain(disk.source), disk.source)
    # running or not as the XML read says (a running domain's carries its id): the chain, its
    # indexes and its definition check all come from that one read; a domain that stops or
    # starts after it is met by the plan's own look-again (live writes fail, offline steps
    # look first)
    running = is_live_xml(xml)
    if running:
        layers = chains.merge_live_indexes(layers, disk)
    chain = chains.Chain(layers, domain=dom.name(), disk=disk.target, live=running)
    if definition:
        from vshx.storage import definition as defined

        defined.check(dom, chain, running, xml if running else None)
    return chain


def unreadable_active(disk: chains.DiskSource) -> str | None:
    """Why a disk's active layer cannot be read as its definition opens it: the file is
    missing, qemu-img cannot open it, or its header is not the format the definition names
    (a qcow2 whose header was overwritten reads as raw); None when it can."""
    from vshx.storage import qemuimg

    source = disk.source or ""
    name = os.path.basename(source)
    if not files.lexists(source):
        return f"the active layer {name} is missing"
    if not files.exists(source):
        return f"the active layer {name} is a link to a file that is missing"
    try:
        found = str(qemuimg.info(source).get("format") or "")
    except VshxError as exc:
        return f"the active layer {name} cannot be read ({exc.message})"
    if disk.format and found and found != disk.format:
        return (
            f"the active layer {name} has no {disk.format} header, as its definition opens it "
            f"(it reads as {found}: damaged?)"
        )
    return None


class PastActive(NamedTuple):
    """A shut-off disk whose active layer cannot be read (``why``), and its chain as the
    definition names it: that layer (not read: no sizes, no header), then the layers below it,
    read from their headers, which name the very files the definition's ``<backingStore>``
    names."""

    chain: chains.Chain
    why: str


def chain_past_active(
    dom: libvirt.virDomain, target: str, xml: str | None = None
) -> PastActive | str | None:
    """For a shut-off disk whose active layer cannot be read (``unreadable_active``): the
    chain below it (PastActive), or, where that is not proven, why not (str); None when the
    active layer can be read (or the disk is running, or no local file or block disk).

    The definition (libvirt writes each external snapshot's chain into it as ``<backingStore>``)
    says what the active layer sits on; the headers below it must name the same files in the
    same order, else nothing is taken from it."""
    from vshx.storage import chain as chains

    xml = dom.XMLDesc(0) if xml is None else xml
    if is_live_xml(xml):
        return None
    disk = find_disk(dom, target, xml)
    if disk.kind not in ("file", "block") or not disk.source or disk.foreign_backing:
        return None
    why = unreadable_active(disk)
    if why is None:
        return None
    if not disk.backing:
        return f"{why}, and the definition names no chain below it to judge by"
    named = [chains.canonical(path) for path, _fmt, _index in disk.backing]
    try:
        below = chains.image_chain(disk.backing[0][0])
    except VshxError as exc:
        return f"{why}, and the layers below it cannot be read ({exc.message})"
    if [layer.canonical for layer in below.layers] != named:
        return f"{why}, and the layers below it are not the chain its definition names"
    source = disk.source
    try:
        allocated: int | None = files.stat(source).st_blocks * 512
    except OSError:
        allocated = None
    top = chains.Layer(
        source,
        disk.format or "qcow2",
        0,
        backing=disk.backing[0][0],
        backing_format=disk.backing[0][1],
        allocated=allocated,
    )
    layers = [top, *(layer._replace(position=layer.position + 1) for layer in below.layers)]
    return PastActive(chains.Chain(layers, dom.name(), disk.target), why)


def is_live_xml(xml: str) -> bool:
    """A running domain's XML carries its id; a shut-off domain's has none."""
    return re.match(r"<domain\b[^>]*\sid=", xml) is not None


def metadata_in(xml: str, ns: str) -> ET.Element | None:
    """The ``<metadata>`` element of namespace ``ns`` in a domain's XML (what
    ``dom.metadata(ELEMENT, ns, flags)`` answers for the definition that XML is, one round trip
    fewer); its tags keep their namespace (``{ns}moment``), its attributes have none."""
    from vshx.storage import chain as chains

    root = chains.parse_domain(xml)
    return root.find(f"./metadata/{{{ns}}}*")


def block_job_info(dom: libvirt.virDomain, disk: str) -> dict[str, int]:
    """The disk's block job, {} when there is none; an error when libvirt cannot say."""
    try:
        return dom.blockJobInfo(disk, 0) or {}
    except libvirt.libvirtError as exc:
        raise VshxError(
            f"cannot ask libvirt about block jobs on {dom.name()} {disk}: "
            f"{exc.get_error_message()}",
            "nothing was changed; try again when libvirtd answers",
        ) from exc


def mirror_ready(live_xml: str, target: str) -> bool:
    """Live XML marks a copy or active commit ready='yes' once it can pivot."""
    from vshx.storage import chain as chains

    for disk in chains.parse_domain(live_xml).findall("./devices/disk"):
        node = disk.find("target")
        if node is not None and node.get("dev") == target:
            mirror = disk.find("mirror")
            return mirror is not None and mirror.get("ready") == "yes"
    return False


def block_jobs(dom: libvirt.virDomain) -> list[dict[str, object]]:
    """The block jobs on a running domain's disks: type, progress, whether it can pivot.

    A domain that stops ("domain is not running", also said while its QEMU is going away) or
    disappears while it is asked has no jobs: a job does not outlive its QEMU, nor start with
    a new one, and a busy host starts and stops domains all the time. Any other error is one.
    """
    try:
        return _block_jobs(dom)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in (
            libvirt.VIR_ERR_OPERATION_INVALID,
            libvirt.VIR_ERR_NO_DOMAIN,
        ):
            return []
        raise VshxError(
            f"cannot ask libvirt about block jobs on {dom.name()}: {exc.get_error_message()}",
            "nothing was changed; try again when libvirtd answers",
        ) from exc


def _block_jobs(dom: libvirt.virDomain) -> list[dict[str, object]]:
    if not dom.isActive():
        return []
    xml = dom.XMLDesc(0)
    found = []
    # the disks' targets only: a file name with a line break does not stop the listing of jobs
    from vshx.storage import chain as chains

    root = chains.parse_domain(xml, f"domain {dom.name()}")
    targets = [t.get("dev", "") for t in root.findall("./devices/disk/target")]
    for target in filter(None, targets):
        info = dom.blockJobInfo(target, 0) or {}
        if not info:
            continue
        end = info.get("end", 0)
        found.append(
            {
                "domain": dom.name(),
                "disk": target,
                "type": JOB_TYPES.get(info.get("type", 0), f"type {info.get('type')}"),
                "progress": round(100 * info.get("cur", 0) / end, 1) if end else 0.0,
                "ready": mirror_ready(xml, target),
            }
        )
    return found
