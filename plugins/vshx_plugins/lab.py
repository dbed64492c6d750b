"""Practice lab: build or remove a domain whose disk is base <- sn1 <- ... <- snN (active).

Every layer holds different data (qemu-io writes distinct patterns, and each layer also
overwrites a shared region so merge order matters) and libvirt has snapshot metadata sn1..snN,
as after ``virsh snapshot-create-as --disk-only``.  ``make demo`` and the tests use this code.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from vshx.api import (
    Args,
    Command,
    Opt,
    Plan,
    Session,
    Step,
    UsageError,
    VshxError,
    commands_hook,
    non_negative_int,
    virsh,
    virt,
    xdg_home,
)
from vshx_plugins.lab_xml import LAB_NS, domain_xml, snapshot_xml

if TYPE_CHECKING:
    import libvirt


MARKER = ".vshx-lab"
DEFAULT_ROOT = "/var/lib/libvirt/images/vshx-lab"
MIB = 1024 * 1024
LAB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def is_lab_domain(dom: libvirt.virDomain) -> bool:
    return LAB_NS in dom.XMLDesc(0)


def layer_names(layers: int) -> list[str]:
    return ["base"] + [f"sn{i}" for i in range(1, layers + 1)]


QEMU_IO_MAX_WRITE = 1024 * MIB  # qemu-io refuses one write over 2 GiB - 512: split it


def qemu_io_write(path: str, pattern: int, offset: int, length: int) -> Step:
    commands = []
    for start in range(offset, offset + length, QEMU_IO_MAX_WRITE):
        size = min(QEMU_IO_MAX_WRITE, offset + length - start)
        commands += ["-c", f"write -q -P 0x{pattern:02x} {start} {size}"]
    return Step(
        f"write pattern 0x{pattern:02x} at {offset // MIB} MiB (+{length // 1024} KiB) "
        f"into {os.path.basename(path)}",
        ["qemu-io", "-f", "qcow2", *commands, path],
    )


def build_plan(
    session: Session,
    name: str,
    directory: str,
    layers: int,
    running: bool,
    fill_mib: int,
    base_fill_mib: int = 0,
) -> Plan:
    """Steps that create the files, define the domain, redefine snapshots, start it."""
    uri = session.uri
    kvm = os.access("/dev/kvm", os.R_OK | os.W_OK)  # TCG where this user cannot use KVM
    size = max(64, 16 + fill_mib, 16 + base_fill_mib) * MIB
    names = layer_names(layers)
    paths = [os.path.join(directory, f"{n}.qcow2") for n in names]
    plan = Plan(f"practice domain {name}: {' <- '.join(names)} (active)")
    parent = os.path.dirname(directory)
    if not os.path.isdir(parent):
        plan.add(Step(f"create {parent}", ["mkdir", "-p", "--", parent]))
    plan.add(Step(f"create the lab directory {directory}", ["mkdir", "--", directory]))
    made = "".join(f"{os.path.basename(p)}\n" for p in paths)
    plan.add(
        Step(
            "mark it as the lab of this domain, with the files lab-create makes in it",
            ["cp", "/dev/stdin", os.path.join(directory, MARKER)],
            stdin=f"{name}\n{made}",
        )
    )
    for k, (layer, path) in enumerate(zip(names, paths, strict=True)):
        if k == 0:
            create = ["qemu-img", "create", "-q", "-f", "qcow2", path, str(size)]
        else:  # relative backing names, as snapshot files usually sit beside their base
            create = [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                os.path.basename(paths[k - 1]),
                path,
                str(size),
            ]
        plan.add(Step(f"create layer {layer}", create))
        plan.add(qemu_io_write(path, 0x10 + k, k * MIB, MIB))
        plan.add(qemu_io_write(path, 0xA0 + k, 0, (layers + 1 - k) * 64 * 1024))
        if fill_mib and k > 0:
            plan.add(qemu_io_write(path, 0x40 + k, 8 * MIB, fill_mib * MIB))
        if base_fill_mib and k == 0:  # a template-like base: much data under small overlays
            plan.add(qemu_io_write(path, 0x30, 16 * MIB, base_fill_mib * MIB))
    xml = domain_xml(name, str(uuid.uuid4()), paths[-1], kvm)
    plan.add(
        Step(
            f"define domain {name} on {paths[-1]}",
            virsh(uri, "define", "/dev/stdin"),
            action=lambda: session.conn.defineXML(xml),
            stdin=xml,
        )
    )
    now = int(time.time()) - layers
    for k in range(1, layers + 1):
        snap = snapshot_xml(names[k], names[k - 1] if k > 1 else None, paths[k], now + k, xml)
        plan.add(
            Step(
                f"record libvirt snapshot metadata {names[k]} (file {names[k]}.qcow2)",
                virsh(uri, "snapshot-create", name, "/dev/stdin", "--redefine", "--disk-only"),
                action=_redefine(session, name, snap),
                stdin=snap,
            )
        )
    if running:
        plan.add(
            Step(
                f"start {name}",
                virsh(uri, "start", name),
                action=lambda: virt.lookup_domain(session.conn, name).create(),
            )
        )
    return plan


def _redefine(session: Session, name: str, snap_xml: str) -> Callable[[], None]:
    def action() -> None:
        import libvirt

        dom = virt.lookup_domain(session.conn, name)
        dom.snapshotCreateXML(
            snap_xml,
            libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
            | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY,
        )

    return action


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
            raise VshxError(f"domain {name!r} was not made by lab-create; not touching it")
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
        present = [f for f in made if os.path.lexists(os.path.join(directory, f))]
        if present:
            paths = [os.path.join(directory, f) for f in present]
            plan.add(Step(f"remove the lab files in {directory}", ["rm", "-f", "--", *paths]))
        marker = os.path.join(directory, MARKER)
        plan.add(Step("remove the lab marker", ["rm", "-f", "--", marker]))
        foreign = foreign_files(directory, made)
        if foreign:
            session.warn(
                f"keeping {directory}: it also holds files lab-create did not make "
                f"({', '.join(foreign[:3])})"
            )
        else:
            plan.add(Step(f"remove the empty directory {directory}", ["rmdir", "--", directory]))
    elif os.path.lexists(directory):
        raise VshxError(
            f"{directory} exists and is not the lab directory of {name!r}",
            "lab-create only uses a directory it creates; pick another --dir or name",
        )
    return plan


def foreign_files(directory: str, made: list[str]) -> list[str]:
    """Files in a lab directory that lab-create did not make (a user's own, kept)."""
    return sorted(set(os.listdir(directory)) - set(made) - {MARKER})


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
    try:
        with open(os.path.join(directory, MARKER), encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    if not lines or lines[0] != name:
        return None
    return [f for f in lines[1:] if f and f == os.path.basename(f) and f not in (".", "..")]


def check_name(name: str) -> None:
    """A lab name becomes a domain name and a directory name: plain words only."""
    if not LAB_NAME.fullmatch(name):
        raise UsageError(
            f"invalid lab name {name!r}",
            "use letters, digits, '.', '_' and '-', starting with a letter or digit",
        )


def lab_root(session: Session) -> str:
    """qemu:///system keeps labs with libvirt's images; a session lab lives in the user's
    XDG data directory, where the session daemon (running as the user) can reach it."""
    if session.uri.startswith("qemu:///session"):
        return os.path.join(xdg_home("data"), "vshx", "labs")
    return DEFAULT_ROOT


def lab_dir(session: Session, args: Args) -> str:
    check_name(args.name)
    return os.path.abspath(args.dir or os.path.join(lab_root(session), args.name))


def cmd_lab_create(session: Session, args: Args) -> None:
    if not 1 <= args.layers <= 20:
        raise VshxError("--layers must be between 1 and 20")
    directory = lab_dir(session, args)
    made = lab_files(args.name, directory)
    foreign = foreign_files(directory, made) if made is not None else []
    if foreign:  # rebuilding would stop halfway at mkdir, after tearing the old lab down
        raise VshxError(
            f"cannot rebuild the lab in {directory}: it also holds files lab-create did not "
            f"make ({', '.join(foreign[:3])})",
            "move them elsewhere, or give this lab another --dir; nothing was changed",
        )
    teardown = remove_lab(session, args.name, directory)
    setup = build_plan(
        session,
        args.name,
        directory,
        args.layers,
        not args.shut_off,
        args.fill,
        args.base_fill,
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
    plan = remove_lab(session, args.name, directory)
    if not plan.steps:
        raise VshxError(f"no practice domain {args.name!r} and no lab files to remove")
    session.run_plan(plan, args)


NAME = Opt(
    "name", "practice domain name", "name", positional=True, required=True, complete="domain"
)
DIR = Opt(
    "dir",
    f"directory for the layer files (default {DEFAULT_ROOT}/NAME; on qemu:///session "
    "~/.local/share/vshx/labs/NAME)",
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
            Opt("layers", "number of snapshot layers above base", "n", convert=int, default=4),
            Opt("shut-off", "leave the domain shut off"),
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
        "and libvirt snapshot metadata sn1..snN. Rebuilds a lab of the same name.",
    ),
    Command(
        "lab-destroy",
        "remove a practice domain and its files",
        cmd_lab_destroy,
        (NAME, DIR),
        group="lab",
        changes=True,
    ),
]


vshx_register_commands = commands_hook(COMMANDS)
