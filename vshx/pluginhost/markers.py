"""``hookimpl`` and ``commands_hook`` without pluggy: a plugin module imports them, and a
one-shot command that needs only its owner's commands never imports pluggy at all.

``hookimpl`` takes pluggy's ``HookimplMarker`` options and keeps them on the function under
its own attribute; vshx's plugin manager (vshx.pluginhost.manager) reads them as pluggy would
read its own marker's, so ``tryfirst``, ``specname=`` and wrappers behave as pluggy documents.
A plugin may use ``pluggy.HookimplMarker("vshx")`` instead: that works too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

if TYPE_CHECKING:
    from vshx.spec.spec import Command

PROJECT = "vshx"
OPTIONS = "vshx_hookimpl_options"  # the attribute ``hookimpl`` puts on a function
F = TypeVar("F", bound=Callable[..., Any])


@overload
def hookimpl(function: F) -> F: ...


@overload
def hookimpl(
    function: None = None,
    *,
    hookwrapper: bool = False,
    optionalhook: bool = False,
    tryfirst: bool = False,
    trylast: bool = False,
    specname: str | None = None,
    wrapper: bool = False,
) -> Callable[[F], F]: ...


def hookimpl(
    function: F | None = None,
    *,
    hookwrapper: bool = False,
    optionalhook: bool = False,
    tryfirst: bool = False,
    trylast: bool = False,
    specname: str | None = None,
    wrapper: bool = False,
) -> F | Callable[[F], F]:
    """Mark a function as a vshx hook implementation, as ``pluggy.HookimplMarker`` would
    (``@hookimpl`` or ``@hookimpl(tryfirst=True)``...).

    New in 0.1. vshx's own marker, with pluggy's options, since 0.3 (a pluggy marker before)."""

    def mark(func: F) -> F:
        options = {
            "wrapper": wrapper,
            "hookwrapper": hookwrapper,
            "optionalhook": optionalhook,
            "tryfirst": tryfirst,
            "trylast": trylast,
            "specname": specname,
        }
        setattr(func, OPTIONS, options)
        return func

    return mark if function is None else mark(function)


def options_of(plugin: object, name: str) -> dict[str, Any] | None:
    """The ``hookimpl`` options of ``plugin``'s attribute ``name``; None when it has none."""
    found = getattr(plugin, name, None)
    options = getattr(found, OPTIONS, None)
    if options is None:
        options = getattr(getattr(found, "__func__", None), OPTIONS, None)
    return options if isinstance(options, dict) else None


def plain(options: dict[str, Any] | None) -> bool:
    """Options that make a hook implementation an ordinary call: no wrapper, no other name."""
    return options is not None and not (
        options["wrapper"] or options["hookwrapper"] or options["specname"]
    )


def commands_hook(commands: list[Command]) -> Callable[..., None]:
    """A ready ``vshx_register_commands`` implementation for a plugin that only adds commands::

    vshx_register_commands = commands_hook(COMMANDS)

    New in 0.2.
    """

    @hookimpl
    def vshx_register_commands(register: Callable[[Command], None]) -> None:
        for command in commands:
            register(command)

    return vshx_register_commands
