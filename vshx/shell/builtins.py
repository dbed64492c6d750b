"""The shell's own commands: connect, list, domblklist, chain, snapshot-list, help, exit.

Part of the core (registered directly, without pluggy, to keep one-shot startup fast); they
read the inventory but never change it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from vshx.errors import UsageError
from vshx.shell.spec import Args, Command, Opt
from vshx.storage import virt

if TYPE_CHECKING:
    from vshx.shell.session import Session
    from vshx.storage.chain import Chain

DOMAIN = Opt(
    "domain", "domain name, id or uuid", "domain", positional=True, required=True, complete="domain"
)


def table(rows: list[list[str]], header: list[str]) -> str:
    """A virsh-style table: a header, a rule, left-aligned columns."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = " " + "   ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header).rstrip(), "-" * (sum(widths) + 3 * len(widths))]
    lines += [fmt.format(*r).rstrip() for r in rows]
    return "\n".join(lines)


def cmd_connect(session: Session, args: Args) -> None:
    session.connect(args.uri)
    session.info(f"connected to {session.uri}")


def virsh(uri: str, *args: str) -> list[str]:
    """vshx.plans.plan.virsh, imported on use: completion imports this module and needs no plans."""
    from vshx.plans.plan import virsh as virsh_argv

    return virsh_argv(uri, *args)


def equivalent_first(session: Session, args: Args, what: str, *argvs: list[str]) -> bool:
    """Read-only commands teach too: --dry-run prints the equivalent virsh/qemu-img commands
    (and stops), --teach prints them before the answer.  True when the command should go on."""
    if not (session.planning_only(args) or session.teaching(args)):
        return True  # the common case builds no plan (and imports nothing for one)
    from vshx.plans.plan import Plan, Step

    plan = Plan(what)
    for argv in argvs:
        plan.add(Step(what, argv, action=lambda: None))
    return session.run_plan(plan, args)


def cmd_list(session: Session, args: Args) -> None:
    import libvirt

    if not equivalent_first(
        session, args, "list domains", virsh(session.uri, "list", *(["--all"] if args.all else []))
    ):
        return
    flags = 0 if args.all else libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE
    rows = []
    for dom in sorted(
        session.conn.listAllDomains(flags), key=lambda d: (d.ID() < 0, d.ID(), d.name())
    ):
        rows.append([str(dom.ID()) if dom.ID() >= 0 else "-", dom.name(), virt.state_name(dom)])
    session.print(table(rows, ["Id", "Name", "State"]))


def cmd_domblklist(session: Session, args: Args) -> None:
    if not equivalent_first(
        session, args, "list disks", virsh(session.uri, "domblklist", args.domain)
    ):
        return
    dom = virt.lookup_domain(session.conn, args.domain)
    rows = [[d.target, d.source or "-"] for d in virt.domain_disks(dom)]
    session.print(table(rows, ["Target", "Source"]))


def render_chain(chain: Chain) -> str:
    """The chain in arrow notation, then one line per layer with its sizes."""
    from vshx.storage.chain import human_size

    if chain.domain:
        how = "running: live block jobs" if chain.live else "shut off: offline qemu-img"
        head = f"{chain.domain} {chain.disk} ({how})"
    else:
        head = f"image {chain.active.path} (bare image: offline qemu-img)"
    rows = []
    for layer in chain.layers:
        mark = "active" if layer.position == 0 else ("base" if layer is chain.bottom else "")
        rows.append(
            [
                chain.ref_of(layer),
                layer.path,
                layer.format,
                human_size(layer.virtual_size),
                human_size(layer.allocated),
                mark,
            ]
        )
    body = table(rows, ["Ref", "File", "Format", "Virtual", "Allocated", ""])
    return f"{head}\n  {chain.arrows()}\n\n{body}"


def cmd_chain(session: Session, args: Args) -> None:
    from vshx.storage.chain import image_chain

    target = args.domain
    info = ["qemu-img", "info", "--backing-chain", "-U"]
    if args.disk is None and (os.path.sep in target or os.path.isfile(target)):
        if equivalent_first(session, args, "show the chain", [*info, os.path.abspath(target)]):
            session.print(render_chain(image_chain(target)))
        return
    dom = virt.lookup_domain(session.conn, target)
    disks = (
        [virt.find_disk(dom, args.disk)]
        if args.disk
        else [d for d in virt.domain_disks(dom) if d.device == "disk" and d.source]
    )
    argvs = [[*info, d.source or ""] for d in disks]
    if equivalent_first(session, args, "show the chain", *argvs):
        session.print("\n\n".join(render_chain(virt.domain_chain(dom, d.target)) for d in disks))


def cmd_snapshot_list(session: Session, args: Args) -> None:
    import xml.etree.ElementTree as ET

    dom = virt.lookup_domain(session.conn, args.domain)
    if not equivalent_first(
        session, args, "list snapshots", virsh(session.uri, "snapshot-list", dom.name(), "--parent")
    ):
        return
    rows = []
    for snap in dom.listAllSnapshots(0):
        root = ET.fromstring(snap.getXMLDesc(0))
        parent = root.findtext("./parent/name") or ""
        files = [
            d.find("source").get("file", "")
            for d in root.findall("./disks/disk")
            if d.find("source") is not None
        ]
        rows.append(
            [
                snap.getName(),
                root.findtext("creationTime") or "",
                root.findtext("state") or "",
                parent,
                " ".join(files),
            ]
        )
    rows.sort(key=lambda r: (int(r[1] or 0), r[0]))
    session.print(table(rows, ["Name", "Creation Time", "State", "Parent", "Files"]))


def cmd_help(session: Session, args: Args) -> None:
    if args.command:
        command = session.host.command(args.command)
        if command is None:
            raise UsageError(f"unknown command {args.command!r}", "type 'help' for the commands")
        session.print(help_text(command))
        return
    groups: dict[str, list[Command]] = {}
    for command in session.host.all_commands():
        groups.setdefault(command.group, []).append(command)
    for group, commands in groups.items():
        session.print(f" {group}:")
        for command in commands:
            alias = f" (alias: {', '.join(command.aliases)})" if command.aliases else ""
            session.print(f"    {command.name:<18}{command.help}{alias}")
    session.print(
        "\nhelp COMMAND shows a command's options. Every command but connect, help and exit "
        "takes --dry-run (print the equivalent virsh/qemu-img commands) and --teach."
    )


def help_text(command: Command) -> str:
    lines = [f"  NAME\n    {command.name} - {command.help}", f"\n  SYNOPSIS\n    {command.usage()}"]
    if command.aliases:
        lines.append(f"\n  ALIASES\n    {', '.join(command.aliases)}")
    if command.description:
        lines.append(f"\n  DESCRIPTION\n    {command.description}")
    lines.append("\n  OPTIONS")
    for opt in command.all_options:
        spell = ", ".join(opt.spellings())
        value = f" <{opt.metavar}>" if opt.metavar else ""
        pos = " (or positional)" if opt.positional else ""
        lines.append(f"    {spell}{value}{pos}\n        {opt.help}")
    return "\n".join(lines)


def cmd_exit(session: Session, args: Args) -> None:
    from vshx.shell.session import ExitRequested

    raise ExitRequested()


BUILTINS = [
    Command(
        "connect",
        "connect to another libvirt URI",
        cmd_connect,
        (
            Opt(
                "uri",
                "libvirt connection URI",
                "uri",
                positional=True,
                required=True,
                complete="uri",
            ),
        ),
        group="general",
        common=False,
        changes=True,
    ),
    Command(
        "list",
        "list domains",
        cmd_list,
        (Opt("all", "include inactive domains"),),
        group="inventory",
    ),
    Command(
        "domblklist",
        "list the disks of a domain",
        cmd_domblklist,
        (DOMAIN,),
        group="inventory",
    ),
    Command(
        "chain",
        "draw the backing chain of a domain's disk or of an image file",
        cmd_chain,
        (
            Opt(
                "domain",
                "domain (or an image path)",
                "domain|image",
                positional=True,
                required=True,
                complete="domain_or_image",
            ),
            Opt(
                "disk",
                "disk target (default: every disk)",
                "disk",
                positional=True,
                complete="disk",
                aliases=("path",),
            ),
        ),
        group="inventory",
    ),
    Command(
        "snapshot-list",
        "list a domain's libvirt snapshots with their disk files",
        cmd_snapshot_list,
        (DOMAIN,),
        group="inventory",
    ),
    Command(
        "help",
        "show the commands, or one command's options",
        cmd_help,
        (Opt("command", "command name", "command", positional=True, complete="command"),),
        group="general",
        common=False,
    ),
    Command("exit", "leave the shell", cmd_exit, aliases=("quit",), group="general", common=False),
]
