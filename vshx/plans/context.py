"""What the layers below the shell need of a session, as a Protocol.

The shell's Session (shell/session.py) is the one implementation; plans, merging and the
plugin host name this type instead, so none of them imports the layer above it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    import libvirt

    from vshx.plans.plan import Plan, Step
    from vshx.plans.target import Target
    from vshx.spec.spec import Args, Command
    from vshx.storage.chain import Chain
    from vshx.storage.identity import FileKey
    from vshx.storage.moments import Verdict


class Hooks(Protocol):
    """The plugin hooks a plan run calls (pluginhost/host.py PluginHost)."""

    def preflight(self, session: Context, target: Target, plan: Plan) -> None: ...

    def plan_ready(self, session: Context, command: Command, args: Args, plan: Plan) -> None: ...


class Context(Protocol):
    """The session a command runs in: connection, output, options, batch predictions."""

    out: TextIO
    err: TextIO
    dry_run: bool
    teach: bool
    quiet: bool
    trace: bool  # --trace: QEMU's QMP events during block jobs
    command: Command | None
    args: Args | None
    words: list[str] | None
    predicted: dict[str, Chain]
    # a batch --dry-run: the record of moments (vshx's ledger) each domain will hold once the
    # lines planned so far ran, by domain name (what their plans record, never written)
    predicted_records: dict[str, list[Verdict]]
    # files a plan of this session deletes (its ``rm -f -- FILE`` steps), by identity: a
    # pasted rm of a file whose content cannot say it is a disk image needs one of these
    deletes_planned: set[FileKey]
    # (domain, disk) an active commit pivoted without being told --pivot (vshx assumes it):
    # a printed plan's later `virsh blockjob D DISK --pivot` line finds nothing left to do
    assumed_pivots: set[tuple[str, str]]
    planning_ahead: bool  # a whole --dry-run session: each line plans on the lines before
    # a batch --dry-run's script being gathered: its later lines' checks of the host, run at
    # its top (hoist); None where lines are printed as they come
    hoisted: list[Step] | None
    plan_json: bool  # --plan-json: a dry run prints each plan as a JSON document

    @property
    def uri(self) -> str: ...

    @property
    def host(self) -> Hooks: ...

    @property
    def conn(self) -> libvirt.virConnect: ...

    @property
    def is_local(self) -> bool: ...

    def print(self, text: str = "") -> None: ...

    def info(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...

    def planning_only(self, args: Args) -> bool: ...

    def teaching(self, args: Args) -> bool: ...

    def write_script(self, text: str) -> None: ...

    def hoist(self, checks: list[Step]) -> None: ...
