"""Every hook a vshx plugin may implement, in one module, all prefixed ``vshx_``.

A plugin is a module (or object) with functions decorated by ``vshx.api.hookimpl``
(vshx.pluginhost.markers), registered
through the ``vshx`` entry-point group in its package metadata::

    [project.entry-points.vshx]
    myplugin = "mypackage.vshx_plugin"

Every hook is called through pluggy (``pm.hook`` or a subset of it), so ``tryfirst``,
``trylast``, ``specname=`` and wrappers behave as pluggy documents.

Each hook's docstring says the vshx version it appeared in; a hook's arguments are only ever
added to (pluggy passes an implementation just the arguments it names), never removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from vshx.plans.context import Context as Session
    from vshx.plans.plan import Plan
    from vshx.plans.target import Target
    from vshx.spec.lesson import Lesson
    from vshx.spec.spec import Args, Command

from vshx.pluginhost.markers import PROJECT

hookspec = pluggy.HookspecMarker(PROJECT)

Completer = Callable[[str, dict[str, str]], Iterable[Any]]


@hookspec
def vshx_register_commands(register: Callable[[Command], None]) -> None:
    """Add commands to the shell.

    Call ``register(Command(...))`` once per command.  The command's spec is the only place its
    name, aliases and options are written; help, parsing and completion all read it.  A plugin
    registers all of its commands or none: a name clash or a bad option reference (``complete=``,
    ``excludes=``, ``implies=``) rejects the whole plugin with one warning line.

    New in 0.1.
    """


@hookspec
def vshx_register_completers(register: Callable[[str, Completer], None]) -> None:
    """Add completion sources that an option can name with ``Opt(complete=NAME)``.

    Call ``register(NAME, function)``; ``function(prefix, given)`` gets the word typed so far
    and the option values already on the line (by option key) and returns candidate strings.
    It serves the REPL and bash/zsh/fish alike, and must be quick and quiet.

    New in 0.2.
    """


@hookspec
def vshx_preflight(session: Session, target: Target, plan: Plan) -> None:
    """Extra refusals before a merge changes anything (raise ``VshxError`` to refuse).

    Called for every Plan that works on a domain disk or image (``plan.target``), after the
    built-in checks and before the plan is printed or run, under ``--dry-run`` too.

    New in 0.2.
    """


@hookspec
def vshx_plan_ready(session: Session, command: Command, args: Args, plan: Plan) -> None:
    """Inspect a Plan just before it is printed (``--dry-run``) or run.

    A plugin may add ``plan.notes`` or edit steps' descriptions, or veto the plan by raising
    ``VshxError``: the command then fails with that message and nothing changes.

    New in 0.2.
    """


@hookspec
def vshx_command_finished(session: Session, command: Command, status: int) -> None:
    """Called after a command ran (status is its exit code); not after a usage error (exit 2),
    where no command ran.

    Use it to react to changes, e.g. to invalidate cached inventory after a merge.

    New in 0.1.
    """


@hookspec
def vshx_register_lessons(register: Callable[[Lesson], None]) -> None:
    """Add lessons to ``lesson list`` / ``lesson start`` (a teacher's own exercises).

    Call ``register(Lesson(...))`` once per lesson (``vshx.api.Lesson``: name, task, goal
    chain, solution lines, hints...).  The ``lesson`` command builds the lab, prints the task
    and checks the student's end state from the outside (chain, definitions, guest data,
    snapshot metadata, block jobs).  A name registered twice keeps the first (vshx's own
    lessons load first).  Called only when a ``lesson`` command needs the list, so a plugin
    that only adds lessons costs other commands nothing.

    New in 0.3.
    """
