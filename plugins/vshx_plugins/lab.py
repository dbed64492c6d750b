"""Practice lab: build or remove a domain whose disk is base <- sn1 <- ... <- snN (active).

It is made the way a user makes one: an empty base, ``virsh define``, ``virsh start``, then the
guest writes (qemu-io through QEMU's monitor: distinct patterns per layer, and a shared region
every layer overwrites so merge order matters) and ``virsh snapshot-create-as --disk-only
--atomic`` in turn.  Snapshot snK made overlay snK.qcow2; its moment is the file below it.
So every native snapshot command works on it.  ``make demo`` and the tests use this code.

On a ``qemu+ssh://`` URI everything about files happens on that host (``vshx.api.files`` and
Steps that run there through ssh): the directory, the marker, the images, /dev/kvm, removal.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from vshx.api import (
    Args,
    Chain,
    Command,
    Layer,
    Opt,
    Plan,
    Session,
    Step,
    UsageError,
    VshxError,
    birth_ns,
    commands_hook,
    files,
    invoking_user,
    non_negative_int,
    preflight,
    quoted,
    refuse_unfit_for_xml,
    shell_line,
    sweep_locks,
    virsh,
    virt,
    xdg_home,
)
from vshx.api import made as made_record
from vshx_plugins.lab_xml import LAB_NS, domain_xml, snapshot_request

if TYPE_CHECKING:
    import libvirt


MARKER = ".vshx-lab"
OWNER = "#owner "  # the marker's line naming who made the lab
IDENT = "#id "  # marker line "#id DEV INO BIRTH PATH": the identity of a file lab-create made
QCOW2_MAGIC = b"QFI\xfb"
DEFAULT_ROOT = "/var/lib/libvirt/images/vshx-lab"
MIB = 1024 * 1024
MARKER_MAX = 1024 * 1024  # a marker lists at most 84 file names: far less than this
LAB_NAME_MAX = 63  # a lab's name is also a directory's and a domain's: kept short
LAB_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{LAB_NAME_MAX - 1}}}")


def is_lab_domain(dom: libvirt.virDomain) -> bool:
    return LAB_NS in dom.XMLDesc(0)


def domain_owner(dom: libvirt.virDomain) -> str | None:
    """Who made a lab domain (its lab metadata says; None for a lab made before owners)."""
    import xml.etree.ElementTree as ET

    node = ET.fromstring(dom.XMLDesc(0)).find(f"./metadata/{{{LAB_NS}}}lab")
    return node.get("owner") if node is not None else None


def marker_lines(directory: str) -> list[str] | None:
    """The lines of the lab marker in ``directory``, read on the image host; None when there
    is none (or it is no text).  A host that cannot be asked raises (VshxError)."""
    try:
        data = files.read(os.path.join(directory, MARKER), MARKER_MAX)
        return data.decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None


def marker_owner(directory: str) -> str | None:
    """Who made the lab in ``directory`` (its marker's ``#owner`` line), if anyone said."""
    lines = marker_lines(directory) or []
    return next((line[len(OWNER) :] for line in lines if line.startswith(OWNER)), None)


def others_hint(asked_by: str, name: str, directory: str, clashes: set[str], me: str) -> str:
    """What the user can do about another user's lab, in the words of the command that met
    it: ``lesson`` has ``--lab`` and ``--dir`` but no ``--force``; lab-destroy has nothing
    of its own to pick."""
    if asked_by == "lab-destroy":
        return (
            "that lab is not yours to remove (check the name with virsh list --all, and --dir), "
            "or --force if you mean it; nothing was changed"
        )
    parts = [part for part in ("domain", "directory") if part in clashes]
    words = " and ".join("name" if part == "domain" else "directory" for part in parts)
    if asked_by == "lesson":
        given = {
            "domain": shell_line(["--lab", f"{name}-{me}"]),
            "directory": shell_line(["--dir", f"{directory}-{me}"]),
        }
        return (
            f"give your lab its own {words}: {' '.join(given[part] for part in parts)}; "
            "nothing was changed"
        )
    given = {"domain": f"a name of your own (e.g. {name}-{me})", "directory": "another --dir"}
    return (
        f"give your lab {' and '.join(given[part] for part in parts)}, or --force if you mean "
        "to rebuild theirs; nothing was changed"
    )


def refuse_others_lab(
    session: Session, name: str, directory: str, force: bool, asked_by: str = "lab-create"
) -> None:
    """On a shared host a student never tears down another's lab (``--force`` does).
    ``asked_by`` (lab-create, lab-destroy, lesson) words the hint for that command's options."""
    import libvirt

    me = invoking_user()
    # the domain and the directory are judged each on its own: either may be someone else's
    owners = [("directory", f"the lab directory {directory}", marker_owner(directory))]
    try:
        dom = session.conn.lookupByName(name)
    except libvirt.libvirtError:
        dom = None
    if dom is not None and is_lab_domain(dom):
        owners.insert(0, ("domain", f"the lab domain {quoted(name)}", domain_owner(dom)))
    others = [(part, what, who) for part, what, who in owners if who and who != me]
    if others and not force:
        _part, what, who = others[0]
        clashes = {part for part, _what, _who in others}
        raise VshxError(
            f"{what} belongs to {who} (you are {me}): vshx does not rebuild or remove another "
            "user's lab",
            others_hint(asked_by, name, directory, clashes, me),
        )


def layer_names(layers: int) -> list[str]:
    return ["base"] + [f"sn{i}" for i in range(1, layers + 1)]


def disk_targets(disks: int) -> list[str]:
    return ["vda", "vdb", "vdc", "vdd"][:disks]


def layer_file(target: str, layer: str) -> str:
    """vda keeps the historic names (base.qcow2, sn1.qcow2...); vdb's are vdb-base.qcow2..."""
    return f"{layer}.qcow2" if target == "vda" else f"{target}-{layer}.qcow2"


QEMU_IO_MAX_WRITE = 1024 * MIB  # qemu-io refuses one write over 2 GiB - 512: split it
HMP_FLAG = 1  # VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP


def qdev(disk: int) -> str:
    """The qdev path of a virtio disk's block backend, as libvirt names the devices."""
    return f"virtio-disk{disk}/virtio-backend"


def monitor_step(session: Session, name: str, description: str, hmp: str) -> Step:
    """A human monitor command (qemu-io through QEMU); it fails when QEMU answers anything."""
    argv = virsh(session.uri, "qemu-monitor-command", name, "--hmp", hmp)

    def action() -> None:
        import libvirt
        import libvirt_qemu  # type: ignore[import-untyped]

        dom = virt.lookup_domain(session.conn, name)
        try:
            said = libvirt_qemu.qemuMonitorCommand(dom, hmp, HMP_FLAG).strip()
        except libvirt.libvirtError as exc:
            raise VshxError(f"{description} failed: {exc.get_error_message()}") from exc
        if said:  # qemu-io in the monitor reports its errors as text, never as a failure
            raise VshxError(f"{description} failed: {said.splitlines()[-1]}")

    return Step(description, argv, action=action)


def guest_write(
    session: Session, name: str, disk: int, file: str, pattern: int, offset: int, length: int
) -> list[Step]:
    """Steps in which the guest writes ``pattern`` on disk number ``disk`` (through QEMU)."""
    steps = []
    for start in range(offset, offset + length, QEMU_IO_MAX_WRITE):
        size = min(QEMU_IO_MAX_WRITE, offset + length - start)
        write = f"write -q -P 0x{pattern:02x} {start} {size}"
        steps.append(
            monitor_step(
                session,
                name,
                f"guest writes pattern 0x{pattern:02x} at {start // MIB} MiB "
                f"(+{size // 1024} KiB) on {disk_targets(disk + 1)[disk]} (into {file})",
                f'qemu-io -d {qdev(disk)} "{write}"',
            )
        )
    return steps


def layer_writes(
    session: Session, name: str, layers: int, k: int, fill_mib: int, base_fill_mib: int, disks: int
) -> list[Step]:
    """What the guest writes between snapshot k and k+1 (into layer k of every disk)."""
    layer = layer_names(layers)[k]
    steps: list[Step] = []
    shared = (layers + 1 - k) * 64 * 1024  # overwritten by every later layer: order matters
    for disk, target in enumerate(disk_targets(disks)):
        file = layer_file(target, layer)
        base = 0x10 if disk == 0 else 0x50 + 0x10 * (disk - 1)
        steps += guest_write(session, name, disk, file, base + k, k * MIB, MIB)
        steps += guest_write(session, name, disk, file, 0xA0 + 0x10 * disk + k, 0, shared)
        if disk == 0 and fill_mib and k > 0:
            steps += guest_write(session, name, disk, file, 0x40 + k, 8 * MIB, fill_mib * MIB)
        if disk == 0 and base_fill_mib and k == 0:  # a template-like base under small layers
            steps += guest_write(session, name, disk, file, 0x30, 16 * MIB, base_fill_mib * MIB)
    return steps


def diskspec(target: str, path: str) -> str:
    """virsh's --diskspec value; virsh reads ',,' as one comma in a file name."""
    return f"{target},file={path.replace(',', ',,')}"


def snapshot_step(
    session: Session, name: str, snap: str, overlays: dict[str, str], directory: str
) -> Step:
    """``virsh snapshot-create-as --disk-only --atomic``: one new overlay per disk."""
    specs: list[str] = []
    for target, path in overlays.items():
        specs += ["--diskspec", diskspec(target, path)]
    request = snapshot_request(snap, overlays)

    def action() -> None:
        import libvirt

        dom = virt.lookup_domain(session.conn, name)
        dom.snapshotCreateXML(
            request,
            libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
            | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC,
        )

    made = ", ".join(os.path.relpath(p, directory) for p in overlays.values())
    return Step(
        f"snapshot {snap}: libvirt puts new overlays on top ({made})",
        virsh(session.uri, "snapshot-create-as", name, snap, "--disk-only", "--atomic", *specs),
        action=action,
    )


def flush_steps(session: Session, name: str, targets: list[str], why: str) -> list[Step]:
    """Flush every disk of the running lab: the files hold every write."""
    return [
        monitor_step(
            session,
            name,
            f"flush {target}: the files hold every write ({why})",
            f'qemu-io -d {qdev(disk)} "flush"',
        )
        for disk, target in enumerate(targets)
    ]


def build_plan(
    session: Session,
    name: str,
    directory: str,
    layers: int,
    running: bool,
    fill_mib: int,
    base_fill_mib: int = 0,
    disks: int = 1,
) -> Plan:
    """Steps that make a lab as a user would: base images, define, start, then guest writes
    and ``virsh snapshot-create-as --disk-only --atomic`` in turn (shut down at the end when
    asked: libvirt 9.0 deletes snapshots made on a running domain, not ones made offline)."""
    uri = session.uri
    # TCG where this user cannot use KVM; asked where the domain runs (the image host)
    kvm = files.access("/dev/kvm", os.R_OK | os.W_OK)
    size = max(64, 16 + fill_mib, 16 + base_fill_mib) * MIB
    names = layer_names(layers)
    targets = disk_targets(disks)
    made_files = [layer_file(t, n) for t in targets for n in names]
    chains = " ; ".join(
        f"{t}: {' <- '.join(layer_file(t, n).removesuffix('.qcow2') for n in names)} (active)"
        for t in targets
    )
    plan = Plan(f"practice domain {name}: {chains}")
    parent = os.path.dirname(directory)
    if not files.isdir(parent):
        plan.add(Step(f"create {parent}", ["mkdir", "-p", "--", parent]))
    plan.add(Step(f"create the lab directory {directory}", ["mkdir", "--", directory]))
    made = "".join(f"{f}\n" for f in made_files)
    plan.add(
        Step(
            "mark it as the lab of this domain, with the files lab-create makes in it",
            ["cp", "/dev/stdin", os.path.join(directory, MARKER)],
            stdin=f"{name}\n{OWNER}{invoking_user()}\n{made}",
        )
    )
    bases = {t: os.path.join(directory, layer_file(t, "base")) for t in targets}
    for target, path in bases.items():
        plan.add(
            Step(
                f"create the empty disk {os.path.basename(path)} ({target})",
                ["qemu-img", "create", "-q", "-f", "qcow2", path, str(size)],
            )
        )
    xml = domain_xml(name, str(uuid.uuid4()), bases, kvm, invoking_user(), vcpu_cap(uri))
    plan.add(
        Step(
            f"define domain {name} on {', '.join(os.path.basename(p) for p in bases.values())}",
            virsh(uri, "define", "/dev/stdin"),
            action=lambda: session.conn.defineXML(xml),
            stdin=xml,
        )
    )
    plan.add(
        Step(
            f"start {name} (the guest writes through QEMU from here on)",
            virsh(uri, "start", name),
            action=lambda: virt.lookup_domain(session.conn, name).create(),
        )
    )
    for k in range(layers + 1):
        plan.steps += layer_writes(session, name, layers, k, fill_mib, base_fill_mib, disks)
        if k < layers:
            snap = names[k + 1]
            # as a guest syncs before a snapshot: QEMU then has no metadata left to write into
            # the file it freezes (a late write there would make the moment unprovable)
            plan.steps += flush_steps(session, name, targets, f"before snapshot {snap}")
            overlays = {t: os.path.join(directory, layer_file(t, snap)) for t in targets}
            plan.add(snapshot_step(session, name, snap, overlays, directory))
    plan.steps += flush_steps(session, name, targets, "for readers with -U, and before the stop")
    plan.add(record_identities(session, directory, made_files))
    if not running:
        plan.add(
            Step(
                f"stop {name} (its disks were flushed; the guest has no OS to shut down)",
                virsh(uri, "destroy", name),
                action=lambda: virt.lookup_domain(session.conn, name).destroy(),
            )
        )
    return plan


class RecordIdentities(Step):
    """Append to the marker the identity (device, inode) of each file lab-create made, read
    when the step runs (the files exist only then): lab-destroy removes a listed name only
    while it is still that file, never one a user put under a name vshx had freed."""

    def __init__(self, marker: str, paths: list[str], local: bool) -> None:
        fmt = f"{IDENT}%d %i %.9W %n"
        printed = shell_line(["stat", "-c", fmt, "--", *paths]) + " >> " + shell_line([marker])
        super().__init__(
            "record in the marker which files lab-create made (device and inode)",
            ["tee", "-a", "--", marker],
            shell=printed,
        )
        self.paths = paths
        self.local = local

    def run(self) -> None:
        lines = []
        for path in self.paths:
            st = files.stat(path, False)
            born = birth_ns(path, self.local) or 0
            birth = f"{born // 10**9}.{born % 10**9:09d}"
            lines.append(f"{IDENT}{st.st_dev} {st.st_ino} {birth} {path}\n")
        self.stdin = "".join(lines)
        super().run()


def record_identities(session: Session, directory: str, made_files: list[str]) -> Step:
    paths = [os.path.join(directory, f) for f in made_files]
    return RecordIdentities(os.path.join(directory, MARKER), paths, session.is_local)


Identity = tuple[int, int, int]  # device, inode, birth time (ns; 0 when not known)


def lab_identities(directory: str) -> dict[str, Identity]:
    """The marker's identities of the files lab-create made, by file name (empty for a lab
    made before vshx recorded them)."""
    found = {}
    for line in marker_lines(directory) or []:
        if not line.startswith(IDENT):
            continue
        parts = line[len(IDENT) :].split(" ", 3)
        if len(parts) < 4 or not (parts[0].isdigit() and parts[1].isdigit()):
            continue
        sec, _dot, frac = parts[2].partition(".")
        if sec.isdigit() and (not frac or frac.isdigit()):
            born = int(sec) * 10**9 + int(frac.ljust(9, "0")[:9] or "0")
        else:
            born = 0  # unknown: as a file system without birth times
        found[os.path.basename(parts[3])] = (int(parts[0]), int(parts[1]), born)
    return found


def not_made_here(path: str, known: dict[str, Identity], local: bool) -> str:
    """Why the file now at ``path`` is not provably the one lab-create made ("" when it is):
    not the device and inode the marker recorded, or (a lab made before identities were
    recorded) not a qcow2 image."""
    name = os.path.basename(path)
    try:
        st = files.stat(path, False)
        head = files.read(path, 4) if files.isfile(path) else b""
    except OSError:
        return f"{name} cannot be read"
    if known:
        made = known.get(name)
        if made is None or made[:2] != (st.st_dev, st.st_ino):
            return f"{name} is not the file lab-create made (another device and inode)"
        born = birth_ns(path, local) if made[2] else None
        if born is not None and born != made[2]:
            return f"{name} is not the file lab-create made (created later, on a reused inode)"
    elif head != QCOW2_MAGIC:
        return f"{name} is not a qcow2 image, so not one lab-create made"
    if head != QCOW2_MAGIC:
        return f"{name} is no longer a qcow2 image"
    return ""


def remove_lab(session: Session, name: str, directory: str) -> Plan:
    """Steps that remove a lab domain (and its files, if the directory is a marked lab)."""
    import libvirt

    uri = session.uri
    plan = Plan(f"remove practice domain {name}")
    try:
        dom = session.conn.lookupByName(name)
    except libvirt.libvirtError:
        dom = None
    if dom is not None:
        if not is_lab_domain(dom):
            raise VshxError(
                f"domain {quoted(name)} was not made by lab-create; not touching it",
                "lab-create and lab-destroy act only on practice domains they made; pick "
                "another name (virsh list --all shows the domains)",
            )
        if virt.is_running(dom):
            plan.add(Step(f"stop {name}", virsh(uri, "destroy", name), action=dom.destroy))
        flags = (  # libvirt refuses to undefine a domain that still has checkpoints
            libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
        )
        plan.add(
            Step(
                f"undefine {name} and its snapshot and checkpoint metadata",
                virsh(uri, "undefine", name, "--snapshots-metadata", "--checkpoints-metadata"),
                action=lambda: dom.undefineFlags(flags),
            )
        )
    made = lab_files(name, directory)
    if made is not None:
        overlays = vshx_made(dom, directory) if dom is not None else {}
        made = made + sorted(set(overlays) - set(made))
        present = [f for f in made if files.lexists(os.path.join(directory, f))]
        paths = [os.path.join(directory, f) for f in present]
        known = lab_identities(directory)
        if known:  # the overlays' identities, as vshx recorded them when it made them
            known.update({f: (m.dev, m.ino, m.born) for f, m in overlays.items()})
        others = {p: why for p in paths if (why := not_made_here(p, known, session.is_local))}
        paths = [p for p in paths if p not in others]
        plan.intent["not_ours"] = sorted(others)

        def keeping(path: str, why: str) -> None:
            plan.notes.append(f"keeping {path}: {why}")
            session.warn(f"keeping {path}: {why}")

        for path, why in sorted(others.items()):
            keeping(path, f"{why} (a file put under a name vshx had freed?)")
        kept = used_elsewhere(session, name, paths)
        paths = [p for p in paths if p not in kept]
        plan.intent["kept"] = sorted(kept)
        for path, users in sorted(kept.items()):
            keeping(path, f"still used by {'; '.join(users)}")
        if paths:
            plan.add(
                Step(
                    f"remove the lab files in {directory}",
                    ["rm", "-f", "--", *paths],
                    action=remove_if_unused(session, name, paths, known),
                )
            )
        if kept:
            again = shell_line(["vshx", "lab-destroy", name, "--dir", directory])
            later = (
                f"the lab marker and {directory} stay: run {again} once nothing else uses "
                "the kept files"
            )
            if plan.steps:  # else nothing goes now: cmd_lab_destroy says why, once
                plan.notes.append(later)
                session.warn(later)  # the domain is gone then: --dir finds them (nu12 #6)
            return plan
        marker = os.path.join(directory, MARKER)
        plan.add(Step("remove the lab marker", ["rm", "-f", "--", marker]))
        foreign = sorted({*foreign_files(directory, made), *map(os.path.basename, others)})
        if foreign:
            session.warn(
                f"keeping {directory}: it also holds files lab-create did not make "
                f"({', '.join(foreign[:3])})"
            )
        else:
            plan.add(Step(f"remove the empty directory {directory}", ["rmdir", "--", directory]))
    elif files.lexists(directory):
        raise VshxError(
            f"{directory} exists and is not the lab directory of {quoted(name)}",
            "lab-create only uses a directory it creates; pick another --dir or name",
        )
    return plan


def used_elsewhere(session: Session, name: str, paths: list[str]) -> dict[str, list[str]]:
    """The lab files something outside lab ``name`` uses, with their users: another domain's
    disk chain, any snapshot or managed-save image of another domain, a pool volume or an
    image beside them (the usage scan every merge makes; the lab's own files pass over each
    other, its domain and snapshots go with it)."""
    images = [p for p in paths if files.isfile(p)]
    if not images:
        return {}
    ours = Chain([Layer(p, "", i) for i, p in enumerate(images)], name, None)
    index = preflight.UsageIndex(session, ours, going=set(images), leaving=name)
    found = {}
    for path in images:
        users = index.users_of(path)
        if users:
            found[path] = users
    return found


def remove_if_unused(
    session: Session, name: str, paths: list[str], known: dict[str, Identity]
) -> Callable[[], None]:
    """The rm, after looking again: a file something else uses now, or that is no longer the
    file lab-create made, stops it (nothing removed)."""

    def action() -> None:
        for path in paths:
            why = not_made_here(path, known, session.is_local) if files.lexists(path) else ""
            if why:
                raise VshxError(
                    f"not removing {path}: {why}",
                    "nothing was removed; run lab-destroy again to keep it and remove the rest",
                    clean=True,
                )
        now = used_elsewhere(session, name, paths)
        if now:
            path, users = next(iter(sorted(now.items())))
            raise VshxError(
                f"not removing {path}: still used by {'; '.join(users)}",
                "nothing was removed; run lab-destroy again to keep it and remove the rest",
                clean=True,
            )
        for path in paths:
            try:
                files.unlink(path)  # on the image host
            except FileNotFoundError:
                pass

    return action


def vshx_made(dom: libvirt.virDomain, directory: str) -> dict[str, made_record.Made]:
    """Files vshx made for the lab's domain in its directory, by name (snapshot-revert's new
    overlays, recorded with their identity when made): the lab's files too, so lab-destroy
    removes them; a file a user put there is never one of them."""
    return {os.path.basename(m.path): m for m in made_record.in_directory(dom, directory)}


def foreign_files(directory: str, made: list[str]) -> list[str]:
    """Files in a lab directory that lab-create did not make (a user's own, kept); the lock
    files a killed vshx left there are removed first (none that a vshx holds now)."""
    sweep_locks(directory)
    return sorted(set(files.listdir(directory)) - set(made) - {MARKER})


def made_with_dir(session: Session, name: str) -> str | None:
    """The directory a lab made with ``--dir`` keeps its files in: its disk's directory, when
    that holds this lab's marker (so ``lab-destroy NAME`` alone removes them too)."""
    import xml.etree.ElementTree as ET

    import libvirt

    try:
        xml = session.conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    except libvirt.libvirtError:
        return None
    source = ET.fromstring(xml).find("./devices/disk/source")
    path = source.get("file") if source is not None else None
    directory = os.path.dirname(path) if path else None
    return directory if directory and lab_files(name, directory) is not None else None


def lab_files(name: str, directory: str) -> list[str] | None:
    """The files lab-create made in ``directory`` for lab ``name``, from its marker; None
    when the directory is not that lab's (no marker, or another lab's)."""
    lines = marker_lines(directory)
    if not lines or lines[0] != name:
        return None
    return [
        f
        for f in lines[1:]
        if f and not f.startswith("#") and f == os.path.basename(f) and f not in (".", "..")
    ]


def check_name(name: str) -> None:
    """A lab name becomes a domain name and a directory name: plain words only."""
    if not LAB_NAME.fullmatch(name):
        raise UsageError(
            f"invalid lab name {quoted(name)}"
            + (f" ({len(name)} characters)" if len(name) > LAB_NAME_MAX else ""),
            f"use at most {LAB_NAME_MAX} letters, digits, '.', '_' and '-', starting with a "
            "letter or digit",
        )


def lab_root(session: Session) -> str:
    """qemu:///system keeps labs with libvirt's images (on a remote host too: its own); a
    session lab lives in the user's XDG data directory, where the session daemon (running as
    the user) can reach it."""
    if session.uri.startswith("qemu:///session"):
        return os.path.join(xdg_home("data"), "vshx", "labs")
    return DEFAULT_ROOT


def vcpu_cap(uri: str) -> bool:
    """Whether the lab's vCPU is capped (lab_xml.VCPU_CAP): on this machine's system daemon,
    where the cgroup cpu controller is there for libvirt to apply it (a session daemon has
    none; a remote host's is not looked at: its labs run uncapped)."""
    if not uri.startswith("qemu:///system"):
        return False
    if os.path.isdir("/sys/fs/cgroup/cpu"):  # cgroup v1
        return True
    try:
        with open("/sys/fs/cgroup/cgroup.controllers") as handle:  # cgroup v2
            return "cpu" in handle.read().split()
    except OSError:
        return False


def lab_dir(session: Session, args: Args) -> str:
    """The lab's directory on the image host.  On a remote URI it is that host's path: an
    absolute ``--dir`` (this machine's working directory means nothing there), and a session
    daemon there needs one (its user's home is not known here)."""
    check_name(args.name)
    if session.is_local:
        return os.path.abspath(args.dir or os.path.join(lab_root(session), args.name))
    if args.dir is not None and not os.path.isabs(args.dir):
        raise UsageError(
            f"--dir {args.dir} is relative: on {session.uri} the lab's directory is on that host",
            "give it as an absolute path on that host, e.g. --dir /srv/labs/" + args.name,
        )
    if args.dir is None and "/session" in session.uri.split("://", 1)[-1].partition("?")[0]:
        raise UsageError(
            f"no default lab directory for a session daemon on {session.uri}",
            "give --dir, an absolute path on that host the session's user can write",
        )
    return os.path.normpath(args.dir or os.path.join(DEFAULT_ROOT, args.name))


def cmd_lab_create(session: Session, args: Args) -> None:
    if not 1 <= args.layers <= 20:
        raise UsageError("--layers must be between 1 and 20", "e.g. --layers 4 (the default)")
    if not 1 <= args.disks <= 4:
        raise UsageError("--disks must be between 1 and 4", "e.g. --disks 2")
    directory = lab_dir(session, args)
    refuse_unfit_for_xml(directory, "--dir")
    # a lesson builds its lab with this command: the hint then names the lesson's options
    asked_by = str(args.get("asked_by") or "lab-create")
    refuse_others_lab(session, args.name, directory, args.force, asked_by)
    made = lab_files(args.name, directory)
    if made is not None:  # snapshot-revert's overlays go with the lab too
        import libvirt

        try:
            dom = session.conn.lookupByName(args.name)
        except libvirt.libvirtError:
            dom = None
        if dom is not None and is_lab_domain(dom):
            made += list(vshx_made(dom, directory))
    foreign = foreign_files(directory, made) if made is not None else []
    if foreign:  # rebuilding would stop halfway at mkdir, after tearing the old lab down
        raise VshxError(
            f"cannot rebuild the lab in {directory}: it also holds files lab-create did not "
            f"make ({', '.join(foreign[:3])})",
            "move them elsewhere, or give this lab another --dir; nothing was changed",
        )
    teardown = remove_lab(session, args.name, directory)
    kept = teardown.intent.get("kept")
    not_ours = teardown.intent.get("not_ours")
    if isinstance(not_ours, list) and not_ours:  # qemu-img create would overwrite them
        raise VshxError(
            f"cannot rebuild the lab in {directory}: it holds files lab-create did not make "
            f"under its file names ({', '.join(str(path) for path in not_ours)})",
            "move them elsewhere, or give this lab another --dir; nothing was changed",
        )
    if isinstance(kept, list) and kept:
        raise VshxError(
            f"cannot rebuild the lab in {directory}: something else uses "
            f"{', '.join(str(path) for path in kept)}",
            "give this lab another --dir or name; nothing was changed",
        )
    setup = build_plan(
        session,
        args.name,
        directory,
        args.layers,
        not args.shut_off,
        args.fill,
        args.base_fill,
        args.disks,
    )
    teardown.steps += setup.steps
    teardown.title = setup.title
    session.run_plan(teardown, args)
    if not session.planning_only(args):
        session.info(f"created {setup.title} in {directory}")


def cmd_lab_destroy(session: Session, args: Args) -> None:
    directory = lab_dir(session, args)
    if args.dir is None and lab_files(args.name, directory) is None:
        directory = made_with_dir(session, args.name) or directory
    refuse_others_lab(session, args.name, directory, args.force, "lab-destroy")
    plan = remove_lab(session, args.name, directory)
    kept = plan.intent.get("kept")
    if not plan.steps and isinstance(kept, list) and kept:
        raise VshxError(
            f"nothing of the lab {quoted(args.name)} can go yet: every lab file left in "
            f"{directory} is still used (named above)",
            "remove or rebase what uses them, then run this command again; nothing was changed",
        )
    if not plan.steps:
        raise VshxError(
            f"no practice domain {quoted(args.name)} and no lab files to remove",
            "check the name (virsh list --all) and --dir; nothing was changed",
        )
    if session.run_plan(plan, args):
        removed = [step.description for step in plan.steps if step.changes]
        session.info(f"lab {args.name}: " + "; ".join(removed))


NAME = Opt(
    "name", "practice domain name", "name", positional=True, required=True, complete="domain"
)
OTHERS = Opt("force", "also rebuild or remove a lab another user made (shared hosts)")
DIR = Opt(
    "dir",
    f"directory for the layer files (default {DEFAULT_ROOT}/NAME, on the URI's host; on "
    "qemu:///session ~/.local/share/vshx/labs/NAME)",
    "dir",
    complete="directory",
)

COMMANDS = [
    Command(
        "lab-create",
        "build (or rebuild) a practice domain with a snapshot chain",
        cmd_lab_create,
        (
            NAME,
            DIR,
            OTHERS,
            Opt("layers", "number of snapshot layers above base", "n", convert=int, default=4),
            Opt("shut-off", "stop the domain once built (its snapshots are taken while it runs)"),
            Opt(
                "disks",
                "number of disks (vda, vdb...), each with its own chain",
                "n",
                convert=int,
                default=1,
            ),
            Opt(
                "base-fill",
                "MiB of data written into the base (a template under small overlays)",
                "mib",
                convert=non_negative_int,
                default=0,
            ),
            Opt(
                "fill",
                "MiB of extra data written into every snapshot layer",
                "mib",
                convert=non_negative_int,
                default=0,
            ),
        ),
        group="lab",
        changes=True,
        description="Layers: base <- sn1 <- ... <- snN (active), each with its own data, "
        "made by guest writes and virsh snapshot-create-as --disk-only sn1..snN (snapshot "
        "snK shows the layer below snK.qcow2). With --disks 2, vdb has vdb-base <- vdb-sn1... "
        "and every snapshot covers both. Rebuilds a lab of the same name.",
    ),
    Command(
        "lab-destroy",
        "remove a practice domain and its files",
        cmd_lab_destroy,
        (NAME, DIR, OTHERS),
        group="lab",
        changes=True,
    ),
]


vshx_register_commands = commands_hook(COMMANDS)
