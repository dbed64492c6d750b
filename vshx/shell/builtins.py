"""The shell's own commands (connect, completion, help, exit, and the inventory commands of
inventory_commands.py) as the one list the core registers.

Part of the core (registered directly, without pluggy, to keep one-shot startup fast); they
read the inventory but never change it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from vshx.errors import ExitRequested, UsageError, VshxError
from vshx.shell.inventory_commands import (
    as_virsh_list,
    cmd_chain,
    cmd_domblklist,
    cmd_list,
    cmd_snapshot_list,
)
from vshx.spec.options import DISK, DOMAIN, DOMAIN_OR_IMAGE, JSON
from vshx.spec.render import quoted
from vshx.spec.spec import Args, Command, Opt

if TYPE_CHECKING:
    from vshx.shell.context import Shell as Session

SHELL_SCRIPTS = {"bash": "vshx.bash", "zsh": "_vshx", "fish": "vshx.fish"}


def cmd_connect(session: Session, args: Args) -> None:
    session.connect(args.uri)
    session.info(f"connected to {session.uri}")


def completion_script(shell: str) -> str:
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "completion", "scripts")
    with open(os.path.join(path, SHELL_SCRIPTS[shell]), encoding="utf-8") as handle:
        return handle.read()


def cmd_completion(session: Session, args: Args) -> None:
    if args.shell not in SHELL_SCRIPTS:
        raise UsageError(
            f"no completion script for {quoted(args.shell)}",
            f"choose one of: {', '.join(SHELL_SCRIPTS)}",
        )
    session.show(completion_script(args.shell).rstrip("\n"))


def cmd_help(session: Session, args: Args) -> None:
    if args.command:
        command = session.host.command(args.command)
        if command is None:
            from vshx.shell import passthrough

            if args.command in passthrough.virsh_commands():
                passthrough.run_virsh(session, ["help", args.command])
                return
            known = [*session.host.registry.words(), *passthrough.virsh_commands()]
            raise passthrough.suggest(args.command, known)
        session.show(help_text(command))
        return
    groups: dict[str, list[Command]] = {}
    for command in session.host.all_commands():
        groups.setdefault(command.group, []).append(command)
    for group, commands in groups.items():
        session.show(f" {group}:")
        for command in commands:
            alias = f" (alias: {', '.join(command.aliases)})" if command.aliases else ""
            session.show(f"    {command.name:<18}{command.help}{alias}")
    from vshx.shell.passthrough import virsh_commands

    others = sorted(set(virsh_commands()) - set(session.host.registry.words()))
    if others:
        import textwrap

        session.show(" virsh (run as virsh -c URI COMMAND ..., see virsh help COMMAND):")
        session.show(
            textwrap.fill(
                " ".join(others),
                96,
                initial_indent="    ",
                subsequent_indent="    ",
                break_on_hyphens=False,
            )
        )
    session.show(
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


def cmd_cd(session: Session, args: Args) -> None:
    """The shell's directory: vshx's own commands resolve relative file names against it and
    virsh/qemu-img lines run in it (their words are passed as typed: qemu-img's -b stays
    relative to the overlay, as qemu-img defines it)."""
    where = args.dir if args.dir is not None else os.path.expanduser("~")
    try:
        os.chdir(where)
    except OSError as exc:
        raise VshxError(f"cd: {where}: {exc.strerror}", "pwd shows where you are") from None
    if session.planning_only(args):  # the printed script's later lines run there too
        from vshx.plans.plan import shell_line

        session.write_script(f"#!/bin/sh\n{shell_line(['cd', '--', os.getcwd()])}\n")


def cmd_pwd(session: Session, args: Args) -> None:
    session.show(os.getcwd())


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
        as_virsh_list("list", cmd_list),
        (
            Opt("all", "include inactive domains", excludes=("inactive",)),
            Opt("inactive", "only inactive domains"),
            Opt("name", "only the names, one a line"),
            JSON,
        ),
        group="inventory",
    ),
    Command(
        "domblklist",
        "list the disks of a domain",
        as_virsh_list("domblklist", cmd_domblklist),
        (DOMAIN, Opt("details", "also the type and device of each disk"), JSON),
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
        "list a domain's snapshots with their moment on every disk (intact, merged, gone)",
        as_virsh_list("snapshot-list", cmd_snapshot_list),
        (
            DOMAIN,
            Opt("name", "only the names, one a line"),
            Opt(
                "tree",
                "the snapshots as a tree of parents and children",
                excludes=("name", "parent"),  # as virsh: its own error, from virsh itself
            ),
            Opt("parent", "virsh's spelling, accepted: the parent is always shown"),
            Opt("topological", "parents before their children (libvirt's order), not by name"),
            JSON,
        ),
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
    Command(
        "explain",
        "print what a command would run, why each flag, and the libvirt/QMP calls beneath",
        lambda session, args: session.explain([args.command]),
        (
            Opt(
                "command",
                "the command line to explain",
                "command",
                positional=True,
                required=True,
                complete="command",
            ),
        ),
        group="general",
        common=False,
        description="explain commit D vda --base sn1 --top sn3: the --dry-run script with, under "
        "each step, the reason for its flags, the libvirt API call and the QMP commands and "
        "events beneath it. Nothing runs.",
    ),
    Command(
        "cd",
        "change the shell's directory (relative file names are read against it)",
        cmd_cd,
        (
            Opt(
                "dir",
                "the directory (default: your home)",
                "dir",
                positional=True,
                complete="directory",
            ),
        ),
        group="general",
        common=False,
        description="As in sh, for the shell and the lines after it: vshx's own commands read "
        "relative file names against it, and virsh and qemu-img lines run in it with their "
        "words as typed.",
    ),
    Command("pwd", "print the shell's directory", cmd_pwd, group="general", common=False),
    Command("exit", "leave the shell", cmd_exit, aliases=("quit",), group="general", common=False),
]
