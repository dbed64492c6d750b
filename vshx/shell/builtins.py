"""The shell's own commands: connect, list, domblklist, chain, snapshot-list, completion,
help, exit.

Part of the core (registered directly, without pluggy, to keep one-shot startup fast); they
read the inventory but never change it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from vshx.errors import ExitRequested, UsageError
from vshx.shell.options import DISK, DOMAIN, DOMAIN_OR_IMAGE, JSON
from vshx.shell.render import chain_document, render_chain, table, to_json
from vshx.shell.spec import Args, Command, Opt
from vshx.storage import virt
from vshx.storage.paths import names_an_image

if TYPE_CHECKING:
    import libvirt

    from vshx.shell.session import Session

SHELL_SCRIPTS = {"bash": "vshx.bash", "zsh": "_vshx", "fish": "vshx.fish"}


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
    domains = sorted(
        session.conn.listAllDomains(flags), key=lambda d: (d.ID() < 0, d.ID(), d.name())
    )
    rows = [[str(d.ID()) if d.ID() >= 0 else "-", d.name(), virt.state_name(d)] for d in domains]
    if args.json:
        keys = ("id", "name", "state")
        session.print(to_json([dict(zip(keys, row, strict=True)) for row in rows]))
        return
    session.print(table(rows, ["Id", "Name", "State"]))


def cmd_domblklist(session: Session, args: Args) -> None:
    if not equivalent_first(
        session, args, "list disks", virsh(session.uri, "domblklist", args.domain)
    ):
        return
    dom = virt.lookup_domain(session.conn, args.domain)
    disks = virt.domain_disks(dom)
    if args.json:
        session.print(
            to_json([{"target": d.target, "source": d.source, "device": d.device} for d in disks])
        )
        return
    session.print(table([[d.target, d.source or "-"] for d in disks], ["Target", "Source"]))


def cmd_chain(session: Session, args: Args) -> None:
    from vshx.storage.chain import image_chain

    target = args.domain
    info = ["qemu-img", "info", "--backing-chain", "-U"]
    if args.disk is None and names_an_image(target):
        if equivalent_first(session, args, "show the chain", [*info, os.path.abspath(target)]):
            chains = [image_chain(target)]
        else:
            return
    else:
        dom = virt.lookup_domain(session.conn, target)
        disks = (
            [virt.find_disk(dom, args.disk)]
            if args.disk
            else [d for d in virt.domain_disks(dom) if d.device == "disk" and d.source]
        )
        if not equivalent_first(
            session, args, "show the chain", *[[*info, d.source or ""] for d in disks]
        ):
            return
        chains = [virt.domain_chain(dom, d.target) for d in disks]
        report_unfinished(session, dom, [d.target for d in disks] if dom.isActive() else [])
    if args.json:
        documents = [chain_document(c) for c in chains]
        session.print(to_json(documents[0] if args.disk or len(documents) == 1 else documents))
        return
    session.print("\n\n".join(render_chain(c) for c in chains))


def report_unfinished(session: Session, dom: libvirt.virDomain, live_disks: list[str]) -> None:
    """`chain` also says what is going on: a block job on a disk, an interrupted vshx plan."""
    from vshx.plans import journal

    for disk in live_disks:
        info = virt.block_job_info(dom, disk)
        if info:
            end = info.get("end", 0)
            done = f"{100 * info.get('cur', 0) / end:.0f}%" if end else "starting"
            kind = virt.JOB_TYPES.get(info.get("type", 0), "block")
            session.warn(
                f"{disk}: block job ({kind}) is running ({done}); see: vshx jobs {dom.name()}"
            )
    entry = journal.read_domain(dom)
    if entry is not None:
        where = f"{dom.name()} {entry.get('disk', '')}".rstrip()
        session.warn(f"{entry.describe()}; resolve it with: vshx recover {where}")


def cmd_snapshot_list(session: Session, args: Args) -> None:
    import time

    from vshx.storage.snapshots import domain_snapshots

    dom = virt.lookup_domain(session.conn, args.domain)
    if not equivalent_first(
        session, args, "list snapshots", virsh(session.uri, "snapshot-list", dom.name(), "--parent")
    ):
        return
    snapshots = sorted(domain_snapshots(dom), key=lambda s: (s.created, s.name))
    if args.json:
        session.print(
            to_json(
                [
                    {
                        "name": s.name,
                        "created": s.created,
                        "state": s.state,
                        "parent": s.parent,
                        "files": s.files,
                    }
                    for s in snapshots
                ]
            )
        )
        return
    rows = [
        [
            s.name,
            time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(s.created)),
            s.state,
            s.parent or "",
            " ".join(s.files),
        ]
        for s in snapshots
    ]
    session.print(table(rows, ["Name", "Creation Time", "State", "Parent", "Files"]))


def completion_script(shell: str) -> str:
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "completion", "scripts")
    with open(os.path.join(path, SHELL_SCRIPTS[shell]), encoding="utf-8") as handle:
        return handle.read()


def cmd_completion(session: Session, args: Args) -> None:
    if args.shell not in SHELL_SCRIPTS:
        raise UsageError(
            f"no completion script for {args.shell!r}", f"choose one of: {', '.join(SHELL_SCRIPTS)}"
        )
    session.out.write(completion_script(args.shell))


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
        "\nhelp COMMAND shows a command's options. Commands marked with --dry-run in their "
        "help print the equivalent virsh/qemu-img commands instead of running; --teach prints "
        "them as they run."
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
        (Opt("all", "include inactive domains"), JSON),
        group="inventory",
    ),
    Command(
        "domblklist",
        "list the disks of a domain",
        cmd_domblklist,
        (DOMAIN, JSON),
        group="inventory",
    ),
    Command(
        "chain",
        "draw the backing chain of a domain's disk or of an image file",
        cmd_chain,
        (DOMAIN_OR_IMAGE, DISK._replace(help="disk target (default: every disk)"), JSON),
        group="inventory",
    ),
    Command(
        "snapshot-list",
        "list a domain's libvirt snapshots with their disk files",
        cmd_snapshot_list,
        (DOMAIN, JSON),
        group="inventory",
    ),
    Command(
        "completion",
        "print the bash, zsh or fish completion script (source <(vshx completion bash))",
        cmd_completion,
        (
            Opt(
                "shell",
                "bash, zsh or fish",
                "shell",
                positional=True,
                required=True,
                complete="shell",
            ),
        ),
        group="general",
        common=False,
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
