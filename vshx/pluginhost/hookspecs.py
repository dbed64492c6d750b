"""Every hook a vshx plugin may implement, in one module, all prefixed ``vshx_``.

A plugin is a module (or object) with functions decorated by :data:`hookimpl`, registered
through the ``vshx`` entry-point group in its package metadata::

    [project.entry-points.vshx]
    myplugin = "mypackage.vshx_plugin"
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from vshx.shell.session import Session
    from vshx.shell.spec import Command

PROJECT = "vshx"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def vshx_register_commands(register: Callable[[Command], None]) -> None:
    """Add commands to the shell.

    Call ``register(Command(...))`` once per command.  The command's spec is the only place its
    name, aliases and options are written; help, parsing and completion all read it.
    """


@hookspec
def vshx_command_finished(session: Session, command: Command, status: int) -> None:
    """Called after every command ran (status is its exit code).

    Use it to react to changes, e.g. to invalidate cached inventory after a merge.
    """


def commands_hook(commands: list[Command]) -> Callable[..., None]:
    """A ready ``vshx_register_commands`` implementation for a plugin that only adds commands::

    vshx_register_commands = commands_hook(COMMANDS)
    """

    @hookimpl
    def vshx_register_commands(register: Callable[[Command], None]) -> None:
        for command in commands:
            register(command)

    return vshx_register_commands
