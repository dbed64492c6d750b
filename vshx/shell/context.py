"""What the shell's own commands need of the session, as a Protocol.

The built-in commands (builtins.py, inventory_commands.py) and the virsh passthrough are
called by the Session (session.py), so they name this type rather than import the Session:
its module holds the default command list, and the two would import each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from vshx.plans.context import Context

if TYPE_CHECKING:
    from vshx.errors import VshxError
    from vshx.plans.plan import Plan
    from vshx.pluginhost.host import PluginHost
    from vshx.spec.spec import Args


class Shell(Context, Protocol):
    """The session, with what a shell command adds: the plugin host, here-documents, help."""

    stdin_text: str | None
    unpredicted: str | None  # a --dry-run line printed unrun that may change things

    @property
    def host(self) -> PluginHost: ...

    def connect(self, uri: str) -> None: ...

    def explain(self, words: Sequence[str], where: str = "") -> int: ...

    def run_words(self, words: Sequence[str], where: str = "") -> int: ...

    def forget_inventory(self, domain: str | None) -> None: ...

    def forget_predictions(self) -> None: ...

    def show(self, text: str) -> None: ...

    def report(self, exc: VshxError, where: str = "") -> None: ...

    def run_plan(self, plan: Plan, args: Args) -> bool: ...
