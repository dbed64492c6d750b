"""The shell's read-only inventory commands: list, domblklist, chain, snapshot-list.

Each prints its virsh/qemu-img equivalent under --dry-run/--teach, and --json for scripts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.plans.plan import Plan, Step, printable, shell_line
from vshx.plans.plan import virsh as virsh_argv
from vshx.spec.render import quoted, table, to_json
from vshx.storage import virt
from vshx.storage.paths import names_an_image

if TYPE_CHECKING:
    import libvirt

    from vshx.shell.context import Shell as Session
    from vshx.spec.spec import Args
    from vshx.storage.chain import Chain
    from vshx.storage.moments import Snapshot


def virsh(uri: str, *args: str) -> list[str]:
    """vshx.plans.plan.virsh, imported on use: completion imports this module and needs no plans."""
    return virsh_argv(uri, *args)


def equivalent_first(session: Session, args: Args, what: str, *argvs: list[str]) -> bool:
    """Read-only commands teach too: --dry-run prints the equivalent virsh/qemu-img commands
    (and stops), --teach prints them before the answer.  True when the command should go on."""
    if not (session.planning_only(args) or session.teaching(args)):
        return True  # the common case builds no plan (and imports nothing for one)
    plan = Plan(what)
    for argv in argvs:
        plan.add(Step(what, argv, action=lambda: None, changes=False))  # reads (atk12 F4)
    return session.run_plan(plan, args)


def virsh_key(name: str) -> bytes:
    """virsh's sort key for the names it lists (vshStrcasecmp, i.e. strcasecmp: ASCII letters
    folded, every other byte as it is)."""
    return name.encode("utf-8", "surrogateescape").lower()


def print_list(session: Session, text: str | None) -> None:
    """A list as virsh prints it: ``text`` (None: no line at all, an empty ``--name`` list),
    then the empty line virsh prints after every command it runs (vshCommandRun), which its
    ``-q`` leaves out as vshx's does."""
    if text is not None:
        session.print(text)
    if not session.quiet:
        session.print("")


def listed(session: Session, rows: list[list[str]], header: list[str]) -> str | None:
    """A table as virsh prints it: under ``-q`` without its header and rule (virsh's quiet
    tables), and no line at all when there is no row."""
    if session.quiet:
        return table(rows, header, headed=False) if rows else None
    return table(rows, header)


def as_virsh_list(name: str, run: Callable[[Session, Args], None]) -> Callable[..., int | None]:
    """A list virsh also has (list, domblklist, snapshot-list): after a failure too virsh
    prints its empty line on stdout, after the error; not after vshx's own --json or a
    --dry-run's plan."""

    def run_list(session: Session, args: Args) -> int | None:
        try:
            run(session, args)
        except Exception as exc:
            if args.get("json") or session.planning_only(args):
                raise
            from vshx.shell.failures import as_user_error

            error = as_user_error(exc, name)
            if error is None:
                raise
            session.report(error)
            print_list(session, None)
            return error.exit_code
        return None

    run_list.__doc__ = run.__doc__
    return run_list


def cmd_list(session: Session, args: Args) -> None:
    import libvirt

    shown = [f"--{o}" for o in ("all", "inactive", "name") if args[o]]
    if not equivalent_first(session, args, "list domains", virsh(session.uri, "list", *shown)):
        return
    flags = 0 if args.all else libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE
    if args.inactive:
        flags = libvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE
    domains = sorted(  # as virsh: running by id, then the others by name (virshDomainSorter)
        session.conn.listAllDomains(flags),
        key=lambda d: (d.ID() < 0, d.ID(), virsh_key(d.name())),
    )
    rows: list[tuple[int | None, str, str]] = []
    for d in domains:
        try:
            state = virt.state_name(d)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                continue  # undefined while we looked: a busy host does that all the time
            raise
        rows.append((d.ID() if d.ID() >= 0 else None, d.name(), state))
    if args.name:
        print_list(session, "\n".join(row[1] for row in rows) if rows else None)
        return
    if args.json:
        domains = [{"id": id_, "name": name, "state": state} for id_, name, state in rows]
        session.print(to_json({"domains": domains}))
        return
    body = [["-" if id_ is None else str(id_), name, state] for id_, name, state in rows]
    print_list(session, listed(session, body, ["Id", "Name", "State"]))


def cmd_domblklist(session: Session, args: Args) -> None:
    if not equivalent_first(
        session, args, "list disks", virsh(session.uri, "domblklist", args.domain)
    ):
        return
    dom = virt.lookup_domain(session.conn, args.domain)
    disks = virt.domain_disks(dom)
    if args.json:
        found = [{"target": d.target, "source": d.source, "device": d.device} for d in disks]
        session.print(to_json({"domain": dom.name(), "disks": found}))
        return
    if args.details:
        rows = [["file", d.device, d.target, d.source or "-"] for d in disks]
        print_list(session, listed(session, rows, ["Type", "Device", "Target", "Source"]))
        return
    print_list(
        session, listed(session, [[d.target, d.source or "-"] for d in disks], ["Target", "Source"])
    )


def cmd_chain(session: Session, args: Args) -> None:
    from vshx.storage.chain import image_chain
    from vshx.storage.chain_view import chain_document, render_chain

    target = args.domain
    info = ["qemu-img", "info", "--backing-chain", "-U"]
    if args.disk is None and names_an_image(target):
        if equivalent_first(session, args, "show the chain", [*info, os.path.abspath(target)]):
            chains = [image_chain(target)]
        else:
            return
    else:
        dom = virt.lookup_domain(session.conn, target)
        every = [] if args.disk else [d for d in virt.domain_disks(dom) if d.device == "disk"]
        disks = [virt.find_disk(dom, args.disk)] if args.disk else [d for d in every if d.source]
        for other in every:
            if other.kind not in ("file", "block"):
                what = f" ({printable(other.remote)})" if other.remote else ""
                session.warn(
                    f"{other.target}: a {other.kind} disk{what}, not shown: vshx reads the "
                    "chains of local file and block disks only"
                )
        if not equivalent_first(
            session, args, "show the chain", *[[*info, d.source or ""] for d in disks]
        ):
            return
        chains = []
        for disk in disks:
            try:
                chains.append(virt.domain_chain(dom, disk.target, definition=False))
            except VshxError as exc:
                if args.disk or len(disks) == 1:
                    raise
                session.warn(f"{disk.target}: not shown: {exc.message}")  # the others are
        if not chains:
            raise VshxError(
                f"no disk of {quoted(target)} could be read (the warnings above say why)",
                "look at one disk: chain DOMAIN DISK",
            )
        report_definition(session, dom, chains)
        report_unfinished(session, dom, [d.target for d in disks] if dom.isActive() else [])
    if args.json:
        session.print(to_json({"chains": [chain_document(c) for c in chains]}))
        return
    held_by = ""
    if not chains[0].domain:  # an image named alone: is it a domain's layer? (nu13 #5)
        held_by = held_by_domains(session, chains[0].active.path)
    session.print("\n\n".join(render_chain(c, held_by) for c in chains))


def held_by_domains(session: Session, image: str) -> str:
    """The domain disks whose chains hold ``image``, said with what shows them as used
    (``chain DOMAIN DISK``); "" where none does, or where that cannot be read (the chain is
    shown all the same: this only names its users)."""
    from vshx.merging import preflight

    try:
        holders = preflight.domain_users(session, image)
    except VshxError:
        return ""
    said = [
        f"{'running' if virt.is_running(dom) else 'shut-off'} domain {dom.name()} {disk}: "
        f"{shell_line(['vshx', 'chain', dom.name(), disk])} shows it as that domain uses it"
        for dom, disk in sorted(holders, key=lambda held: (held[0].name(), held[1]))
    ]
    return "; ".join(said)


def report_definition(session: Session, dom: libvirt.virDomain, chains: list[Chain]) -> None:
    """`chain` shows the headers' chain, and says so when the definition names other files."""
    from vshx.storage import definition

    for chain in chains:
        try:
            definition.check(dom, chain, chain.live)
        except VshxError as exc:
            session.warn(printable(exc.message))
            if exc.hint:
                print(f"hint: {printable(exc.hint)}", file=session.err)
            xml = definition.persistent_xml(dom)
            defined = definition.find(xml, chain.disk or "")
            if not chain.live and defined is not None:
                from vshx.merging.definition import print_alignment

                print_alignment(session, dom, xml, defined, chain)


def report_unfinished(session: Session, dom: libvirt.virDomain, live_disks: list[str]) -> None:
    """`chain` also says what is going on: a block job on a disk, an interrupted vshx plan."""
    from vshx.plans import journal

    for job in virt.block_jobs(dom) if live_disks else []:
        if job["disk"] in live_disks:
            session.warn(
                f"{job['disk']}: block job ({job['type']}) is running ({job['progress']:.0f}%); "
                f"see: {shell_line(['vshx', 'jobs', dom.name()])}"
            )
    entry = journal.read_domain(dom)
    if entry is not None:
        disk = str(entry.get("disk") or "")
        recover = shell_line(["vshx", "recover", dom.name(), *([disk] if disk else [])])
        session.warn(f"{entry.describe()}; resolve it with: {recover}")


def cmd_snapshot_list(session: Session, args: Args) -> None:
    """virsh snapshot-list, with each snapshot's moment on every disk it covers."""
    import time

    from vshx.merging.moments import domain_timeline

    dom = virt.lookup_domain(session.conn, args.domain)
    if not equivalent_first(
        session, args, "list snapshots", virsh(session.uri, "snapshot-list", dom.name(), "--parent")
    ):
        return
    snapshots = domain_timeline(session, dom).snapshots
    if args.json:
        session.print(to_json({"domain": dom.name(), "snapshots": [as_json(s) for s in snapshots]}))
        return
    snapshots = virsh_order(dom, snapshots, args.topological)
    if args.name:
        print_list(session, "\n".join(s.name for s in snapshots) if snapshots else None)
        return
    if args.tree:
        print_list(session, snapshot_tree(snapshots) if snapshots else None)
        return
    rows = [
        [
            s.name + (" *" if s.current else ""),
            time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(s.created)),
            s.state,
            s.parent or "",
            moments_text(s),
        ]
        for s in snapshots
    ]
    header = ["Name", "Creation Time", "State", "Parent", "Moment on each disk"]
    print_list(session, listed(session, rows, header))


def virsh_order(
    dom: libvirt.virDomain, snapshots: list[Snapshot], topological: bool
) -> list[Snapshot]:
    """The order virsh lists snapshots in: libvirt's (its topological one with
    ``--topological``), sorted by name unless ``--topological`` (virshSnapSorter, a stable
    sort: names equal but for case keep libvirt's order)."""
    import libvirt

    flags = libvirt.VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL if topological else 0
    try:
        names = [handle.getName() for handle in dom.listAllSnapshots(flags)]
    except libvirt.libvirtError:
        names = []  # gone meanwhile: by name, as virsh sorts
    place = {name: i for i, name in reversed(list(enumerate(names)))}
    ordered = sorted(snapshots, key=lambda s: place.get(s.name, len(names)))
    return ordered if topological else sorted(ordered, key=lambda s: virsh_key(s.name))


def moments_text(snap: Snapshot) -> str:
    """``vda: sn1.qcow2 (intact)  vdb: gone (...)``; memory state named first."""
    parts = [f"{disk}: {m.describe()}" for disk, m in snap.moments.items()]
    if snap.has_memory:
        parts.insert(0, f"memory: {snap.memory_file or snap.memory}")
    return "  ".join(parts)


def as_json(snap: Snapshot) -> dict[str, object]:
    return {
        "name": snap.name,
        "created": snap.created,
        "state": snap.state,
        "parent": snap.parent,
        "files": [m.overlay for m in snap.moments.values() if m.overlay],
        "current": snap.current,
        "memory": snap.memory,
        "disks": {
            disk: {
                "file": m.file,
                "overlay": m.overlay,
                "moment": m.state,
                "holder": m.holder,
                "in_chain": m.in_chain,
                "why": m.why or None,
            }
            for disk, m in snap.moments.items()
        },
    }


def snapshot_tree(snapshots: list[Snapshot]) -> str:
    """virsh snapshot-list --tree, line for line (vshTreePrint: each root, then its children
    under ``|`` and ``+-``, in the order given), each name followed by its moment on every
    disk."""
    names = {s.name for s in snapshots}
    lines: list[str] = []

    def walk(snap: Snapshot, last: Snapshot, root: bool, indent: str) -> None:
        lines.append(f"{indent}{'' if root else '+- '}{snap.name}    {moments_text(snap)}")
        own = indent if root else indent + (" " if snap is last else "|") + " "
        children = [s for s in snapshots if s.parent == snap.name]
        if children:
            lines.append(f"{own}  |")
        for child in children:
            walk(child, children[-1], False, own + "  ")
        if not children and snap is last:
            lines.append(own)

    for snap in snapshots:
        if snap.parent not in names:
            walk(snap, snap, True, "")
    return "\n".join(lines)
