"""snapshot-revert: go back to an external disk-only snapshot of a shut-off domain, as libvirt 9.9.

libvirt before 9.9 refuses to revert external snapshots.  9.9 does it this way, and so does vshx
on any libvirt: on every disk the snapshot covers, a new overlay is created on the file that
holds the snapshot's moment (``qemu-img create -F FMT -b FILE NEW``), the persistent definition
is switched to the new overlays (``virsh update-device --config``), and the snapshot is made
current; a snapshot without children then names the new overlays as its own, as 9.9 writes it.
Where vshx differs from 9.9 (src/qemu/qemu_snapshot.c), on purpose: libvirt also puts back the
definition saved in the snapshot, which would take vshx's own records out of the domain's
metadata with everything else changed since, and it unlinks the overlays the current snapshot
made; vshx switches the disks only and deletes nothing: the branch left behind (the files the
domain used until now) is kept and reported with its size.  Snapshots with memory state and
running domains are refused.  ``--force`` and ``--reset-nvram`` are virsh's; the managed-save
refusal, libvirt's one risky case here, holds with ``--force`` too.

The new overlay's name follows from the starting state alone, so a ``--dry-run`` script names
the very files the real run creates (libvirt 9.9 names them by the revert's creation time, its
default for an external snapshot's files, which no earlier plan can know):
``<moment file without its suffix>.<snapshot>-revert.qcow2`` beside the moment file, and
``-revert2``, ``-revert3``... when that name is taken (a second revert to the same snapshot).
The counter is decided when the plan is made, from the files there; the real run refuses a
name taken since then and never writes over a file (checks.new_file_step).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Callable

from vshx.api import (
    DOMAIN,
    Args,
    Chain,
    Command,
    Layer,
    Opt,
    Plan,
    Session,
    Snapshot,
    Step,
    Target,
    Timeline,
    UsageError,
    Verdict,
    VshxError,
    canonical,
    checks,
    commands_hook,
    definition_steps,
    domain_timeline,
    files,
    human_size,
    image_chain,
    libvirt,
    load_past_active,
    load_target,
    made,
    preflight,
    quoted,
    render_chain,
    shell_line,
    underneath,
    virsh,
    virt,
    xml_text,
)

SNAPSHOT_PIECE_BYTES = 64  # of a snapshot's name in a file name (NAME_MAX is 255 bytes)


def file_piece(snapshot: str) -> str:
    """A snapshot name as a safe piece of one file name: letters, digits, ``.``, ``_``, ``+``
    and ``-`` stay, every other character becomes ``_`` (a ``/``, which libvirt refuses in a
    name today, can never lead out of the moment file's directory; nor can a space, a quote,
    a control character or an undecodable byte reach the name), cut to 64 bytes of UTF-8.
    Two names that become the same piece are told apart by the counter."""
    kept = "".join(c if c.isalnum() or c in "._+-" else "_" for c in snapshot)
    return kept.encode()[:SNAPSHOT_PIECE_BYTES].decode("utf-8", "ignore")


def overlay_name(moment_file: str, snapshot: str, count: int = 1) -> str:
    """The name of the new overlay a revert to ``snapshot`` puts on ``moment_file``, beside it:
    the moment file's name without its suffix, then ``.<snapshot>-revert<count>.qcow2`` (no
    number for the first), the snapshot's name made safe by ``file_piece``."""
    directory, name = os.path.split(moment_file)
    stem = os.path.splitext(name)[0] or name
    number = str(count) if count > 1 else ""
    return os.path.join(directory, f"{stem}.{file_piece(snapshot)}-revert{number}.qcow2")


def overlay_place(holder: str, target: Target) -> str:
    """What the new overlay is named after and put beside: the moment file, or, where that is
    a device (a qcow2 on a block device: its directory is /dev, a RAM file system QEMU cannot
    be given files on), a file of that name beside the disk's active layer."""
    if files.isfile(holder):
        return holder
    active = target.chain.active.path
    if not files.isfile(active):
        raise VshxError(
            f"no directory to put the new overlay on {holder} in: it is not a regular file, and "
            f"neither is the disk's active layer {active}",
            "nothing was changed; revert by hand: qemu-img create -f qcow2 -b MOMENT -F FORMAT "
            "NEW.qcow2 in a directory of images, then point the disk at it",
        )
    return os.path.join(os.path.dirname(active), os.path.basename(holder))


def free_overlay_name(moment_file: str, snapshot: str, taken: set[str]) -> str:
    """The first ``overlay_name`` no file has (nor a dangling link) and no other disk of this
    plan takes (``taken``, by resolved directory; the name is added to it)."""
    directory = files.realpath(os.path.dirname(moment_file))
    count = 1
    while True:
        path = overlay_name(moment_file, snapshot, count)
        key = os.path.join(directory, os.path.basename(path))
        if key not in taken and not files.lexists(path):
            break
        count += 1
    if len(os.fsencode(os.path.basename(path))) > 255:
        raise VshxError(
            f"the new overlay's name would be too long for a file name: {path}",
            "nothing was changed; rename the moment file (or the snapshot) to a shorter name",
        )
    taken.add(key)
    return path


def refuse(dom: libvirt.virDomain, snap: Snapshot) -> None:
    native = shell_line(["virsh", "snapshot-revert", dom.name(), snap.name])
    if dom.isActive():
        raise VshxError(
            f"{dom.name()} is running: vshx reverts external snapshots of shut-off domains only",
            f"shut it down first ({shell_line(['virsh', 'shutdown', dom.name()])}; a guest "
            "that does not react, such as a practice lab's, which runs no operating system: "
            f"{shell_line(['virsh', 'destroy', dom.name()])}), then run this again; libvirt "
            f">= 9.9 also reverts a running domain itself: {native}",
        )
    if dom.hasManagedSaveImage(0):
        raise VshxError(
            f"{dom.name()} has saved state (a managed-save image, virsh managedsave): its RAM "
            "restores onto the disks as they are now, so vshx does not switch them (--force, "
            "which lets libvirt go on, does not change that)",
            f"start it ({shell_line(['virsh', 'start', dom.name()])} restores the RAM) and shut "
            "it down cleanly, or discard the saved RAM: "
            f"{shell_line(['virsh', 'managedsave-remove', dom.name()])}",
        )
    if snap.has_memory:
        raise VshxError(
            f"snapshot {snap.name} holds memory state: vshx reverts disk-only snapshots",
            f"libvirt >= 9.9 restores memory snapshots itself: {native}",
        )
    if not snap.moments or any(m.internal for m in snap.moments.values()):
        raise VshxError(
            f"snapshot {snap.name} is not an external disk snapshot on every disk",
            f"virsh reverts internal snapshots itself: {native}",
        )
    for disk, moment in snap.moments.items():
        if not moment.kept or not moment.holder or not files.exists(moment.holder):
            raise VshxError(
                f"snapshot {snap.name}'s moment on {disk} is {moment.state}"
                + (f" ({moment.why})" if moment.why else ""),
                f"nothing was changed; see: {shell_line(['snapshot-list', dom.name()])}",
            )


def abandoned(target: Target, holder: str) -> list[Layer]:
    """The layers the disk used until now that the new chain does not use."""
    keep = {layer.canonical for layer in image_chain(holder).layers}
    return [layer for layer in target.chain.layers if layer.canonical not in keep]


def current_step(session: Session, dom: libvirt.virDomain, snap: Snapshot, xml: str) -> Step:
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
    extra = ["--current"]
    if snap.state == "disk-snapshot":
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
        extra.insert(0, "--disk-only")
    return Step(
        f"make snapshot {snap.name} current",
        virsh(session.uri, "snapshot-create", dom.name(), "/dev/stdin", "--redefine", *extra),
        action=lambda: dom.snapshotCreateXML(xml, flags),
        stdin=xml,
    )


def overlays_xml(snap: Snapshot, new: dict[str, str]) -> str:
    """The snapshot's XML naming the new overlays in ``<disks>`` (libvirt 9.9, no children)."""
    root = ET.fromstring(snap.xml)
    for disk in root.findall("./disks/disk"):
        path = new.get(disk.get("name", ""))
        source = disk.find("source")
        if path and source is not None:
            source.attrib.clear()
            source.set("file", path)
    return xml_text(root, snap.xml)


def cmd_snapshot_revert(session: Session, args: Args) -> None:
    dom = virt.lookup_domain(session.conn, args.domain)
    name = args.snapshotname
    if not name:
        if not args.current:
            raise UsageError("which snapshot?", "give its name, or --current")
        try:
            name = dom.snapshotCurrent(0).getName()
        except libvirt.libvirtError:
            raise VshxError(f"domain {dom.name()} has no current snapshot") from None
    timeline = domain_timeline(session, dom)
    snap = timeline.find(name)
    if snap is None:
        raise VshxError(
            f"domain {dom.name()} has no snapshot {quoted(name)}",
            f"see: {shell_line(['snapshot-list', dom.name()])}",
        )
    refuse(dom, snap)
    unread: dict[str, str] = {}  # disks whose active layer cannot be read: why
    targets = {d: revert_target(session, dom, d, unread) for d in snap.moments}
    timeline = domain_timeline(session, dom)
    snap = timeline.find(name)
    assert snap is not None
    refuse(dom, snap)
    ours: dict[str, made.Made] = {}  # the overlays this run made, as they were made
    plan = build_plan(session, dom, timeline, snap, targets, args, ours)
    for disk, why in unread.items():
        plan.notes.append(
            f"{disk}: {why}; a revert does not read it (it is the state left behind): it is "
            "kept as it is, neither read nor deleted"
        )
    try:
        ran = session.run_plan(plan, args)
    except (VshxError, KeyboardInterrupt) as exc:
        removed = remove_unnamed(dom, ours)
        if not removed or not isinstance(exc, VshxError):
            raise
        said = f"{exc.hint}; " if exc.hint else ""
        raise VshxError(
            exc.message,
            f"{said}vshx then removed the new overlays this run made that no definition or "
            f"snapshot names: {', '.join(removed)}",
        ) from None
    if ran:
        for disk in targets:
            session.info(render_chain(virt.domain_chain(dom, disk)))
        session.info(f"Domain {dom.name()} reverted to snapshot {snap.name}")
        for note in plan.notes:  # what the dry run said stays, the real run says too
            if note.startswith(BRANCH_KEPT):
                session.info(note)


def revert_target(
    session: Session, dom: libvirt.virDomain, disk: str, unread: dict[str, str]
) -> Target:
    """The disk as a Target (its chain locked, as every merge loads it), or, where its
    active layer cannot be read (missing, a damaged header) but the layers below it are the
    chain its definition names, that chain from the layers below (load_past_active; why the
    active layer cannot be read goes into ``unread``): a revert needs only the moment file,
    below it, and leaves the state it reverts away from as it is."""
    try:
        return load_target(session, dom.name(), disk)
    except VshxError:
        past = load_past_active(session, dom, disk)
        if past is None:
            raise
        unread[disk] = past[1]
        return past[0]


def remember(dom: libvirt.virDomain, ours: dict[str, made.Made]) -> Callable[[str], None]:
    """What a new overlay's step calls once it is made: this run's own file (``ours``), and
    recorded in the domain's metadata (lab-destroy removes it with the lab)."""

    def made_now(path: str) -> None:
        ours[path] = made.identity(path)
        made.record(dom, path)

    return made_now


def remove_unnamed(dom: libvirt.virDomain, ours: dict[str, made.Made]) -> list[str]:
    """After the plan stopped: remove the overlays this run made that no definition or
    snapshot of the domain names (the plan stopped before switching to them), while each is
    still the file this run made; their names."""
    named = made.named(dom)
    if named is None:
        return []  # cannot tell what is named: nothing is removed
    removed = []
    for path, record in ours.items():
        if canonical(path) in named:
            continue
        if made.still_made(record):
            files.unlink(path)
            removed.append(os.path.basename(path))
    return removed


# the note naming the files a revert leaves behind, with their size: printed by the dry run
# among the plan's notes and after the real run
BRANCH_KEPT = "the branch left behind is kept, nothing is deleted: "


def build_plan(
    session: Session,
    dom: libvirt.virDomain,
    timeline: Timeline,
    snap: Snapshot,
    targets: dict[str, Target],
    args: Args,
    ours: dict[str, made.Made] | None = None,
) -> Plan:
    first = next(iter(targets.values()))
    first.timeline = timeline
    plan = Plan(
        f"revert {dom.name()} to snapshot {snap.name} (new overlays on its moment files)",
        method="offline: qemu-img create (the domain is shut off), then libvirt definition "
        "and snapshot metadata",
        target=first,
    )
    taken: set[str] = set()
    new: dict[str, str] = {}
    creates: list[Step] = []
    definition: list[Step] = []
    left: list[str] = []
    for disk, target in targets.items():
        moment = snap.moments[disk]
        holder = moment.holder or ""
        path = free_overlay_name(overlay_place(holder, target), snap.name, taken)
        new[disk] = path
        below = image_chain(holder)
        fmt = preflight.require_format(below.active)
        creates.append(checks.absent_step(path))
        creates.append(
            checks.new_file_step(
                f"create {os.path.basename(path)} on {os.path.basename(holder)} ({disk}: "
                f"{snap.name}'s moment)",
                ["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", holder, path],
                path,
                underneath=underneath.overlay_on_moment(),
                made=remember(dom, {} if ours is None else ours),
            )
        )
        sub = Plan(plan.title, target=target)
        sub.before = target.chain
        layers = [Layer(path, "qcow2", 0)] + [
            Layer(lay.path, lay.format, lay.position + 1) for lay in below.layers
        ]
        sub.after = Chain(layers, dom.name(), disk)
        definition += definition_steps(session, target, sub)
        gone = abandoned(target, holder)
        size = sum(layer.allocated or 0 for layer in gone)
        if gone:
            left.append(f"{disk}: {', '.join(layer.name for layer in gone)} ({human_size(size)})")
    children = [s for s in timeline.snapshots if s.parent == snap.name]
    xml = snap.xml if children else overlays_xml(snap, new)
    plan.steps += creates + definition + [current_step(session, dom, snap, xml)]
    if args.running or args.paused:
        extra = ["--paused"] if args.paused else []
        start_flags = libvirt.VIR_DOMAIN_START_PAUSED if args.paused else 0
        if args.reset_nvram:
            extra.append("--reset-nvram")
            start_flags |= libvirt.VIR_DOMAIN_START_RESET_NVRAM
        plan.add(
            Step(
                f"start {dom.name()}" + (" paused" if args.paused else ""),
                virsh(session.uri, "start", dom.name(), *extra),
                action=lambda: dom.createWithFlags(start_flags),
            )
        )
    if args.reset_nvram and not (args.running or args.paused):
        plan.notes.append(
            "--reset-nvram takes effect when the domain starts, as in libvirt: this revert does "
            "not start it (add --running, or start it with virsh start --reset-nvram)"
        )
    if left:
        plan.notes.append(BRANCH_KEPT + "; ".join(left))
    if children:
        plan.notes.append(
            f"{snap.name} has children: its metadata keeps naming its own overlays (libvirt "
            "9.9 writes the new ones as <revertDisks>, which older libvirt cannot store); "
            "vshx records where each moment is"
        )
    if session.teaching(args):
        version = session.conn.getLibVersion()
        native = shell_line(virsh(session.uri, "snapshot-revert", dom.name(), snap.name))
        plan.notes += underneath.native_revert(native, version)
    plan.keeps = [f"keeps: every snapshot's moment; {snap.name}'s is the disks' new base"]
    plan.verdicts = [
        Verdict(
            s.name, s.created, d, m.state, m.holder, m.why or "kept by snapshot-revert", "", m.file
        )
        for s in timeline.snapshots
        for d, m in s.moments.items()
        if d in targets and m.kept and m.holder
    ]
    return plan


COMMANDS = [
    Command(
        "snapshot-revert",
        "go back to an external disk-only snapshot of a shut-off domain (as libvirt 9.9)",
        cmd_snapshot_revert,
        (
            DOMAIN,
            Opt(
                "snapshotname",
                "the snapshot to revert to",
                "name",
                positional=True,
                complete="snapshot",
            ),
            Opt("current", "revert to the current snapshot"),
            Opt("running", "start the domain afterwards"),
            Opt("paused", "start the domain paused afterwards", excludes=("running",)),
            Opt(
                "force",
                "virsh's option for risky reverts, accepted: the one a shut-off disk-only "
                "revert meets (saved RAM of a managed save) stays refused",
            ),
            Opt(
                "reset-nvram",
                "with --running or --paused, start with the UEFI variables reset from their "
                "template (virsh start --reset-nvram)",
            ),
        ),
        group="merge",
        changes=True,
        predicted=False,  # a new overlay and the current snapshot: later dry-run lines stop
        description="New overlays on each disk's moment file (qemu-img create -F -b), the "
        "definition switched to them, the snapshot made current; every existing file is "
        "kept. Running domains and memory snapshots are refused.",
    )
]


vshx_register_commands = commands_hook(COMMANDS)
