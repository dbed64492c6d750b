"""The public API for plugin authors: import from here; nothing else in vshx is promised.

Besides the types, it offers the shared merge machinery as namespaces (``preflight``,
``checks``, ``routes``, ``verify``), storage access (``virt``, ``qemuimg``, ``snapshots``) and
libvirt itself, imported on first use.

    from vshx import api

    @api.hookimpl
    def vshx_register_commands(register):
        register(api.Command("hello", "say hello", run, (api.Opt("who", "whom", "name"),)))
"""

from typing import TYPE_CHECKING, Any

from vshx.errors import UsageError, VshxError
from vshx.merging import bitmaps, checks, preflight, routes
from vshx.merging.common import (
    check_merge,
    follow_up_note,
    job_flags_argv,
    live_job_step,
    offline_domain_note,
    report_after_merge,
)
from vshx.merging.definition import steps as definition_steps
from vshx.merging.deletion import delete_steps
from vshx.merging.savedstate import refuse_saved_state
from vshx.merging.target import (
    chain_of_disk,
    chain_of_image,
    load_target,
    refuse_interrupted,
)
from vshx.plans import journal, underneath
from vshx.plans.plan import Plan, Step, shell_line, virsh
from vshx.plans.target import Target
from vshx.pluginhost.hookspecs import commands_hook, hookimpl
from vshx.shell.session import Session
from vshx.spec.options import (
    BANDWIDTH,
    BASE,
    DISK,
    DOMAIN,
    DOMAIN_OR_IMAGE,
    FORCE,
    JOB_OPTIONS,
    JSON,
    SCAN,
)
from vshx.spec.render import JSON_SCHEMA, comment, comments, printable, table, to_json
from vshx.spec.spec import Args, Command, Opt, non_negative_int
from vshx.storage import procs, qemuimg, snapshots, virt
from vshx.storage.chain import Chain, Layer, canonical, human_size, image_chain
from vshx.storage.chain_view import render_chain
from vshx.storage.identity import FileKey, identity
from vshx.storage.libvirt_lazy import libvirt
from vshx.storage.paths import names_an_image
from vshx.storage.snapshots import (
    SnapshotInfo,
    current_chain_files,
    domain_snapshots,
    stale_reason,
)
from vshx.storage.statefiles import xdg_home

if TYPE_CHECKING:
    from vshx.merging import verify
    from vshx.merging.verify import first_visible_difference


def __getattr__(name: str) -> Any:
    """The rebase proof (``verify``) is imported on first use: it pulls in tempfile and shutil,
    ~10 ms that a one-shot commit or pull does not need."""
    if name in ("verify", "first_visible_difference"):
        from vshx.merging import verify

        return verify if name == "verify" else verify.first_visible_difference
    raise AttributeError(f"module 'vshx.api' has no attribute {name!r}")


__all__ = [
    "first_visible_difference",
    "stale_reason",
    "domain_snapshots",
    "current_chain_files",
    "SnapshotInfo",
    "BANDWIDTH",
    "bitmaps",
    "BASE",
    "DISK",
    "DOMAIN",
    "DOMAIN_OR_IMAGE",
    "FORCE",
    "JOB_OPTIONS",
    "JSON",
    "SCAN",
    "shell_line",
    "Args",
    "Chain",
    "Command",
    "FileKey",
    "Layer",
    "Opt",
    "Plan",
    "Session",
    "Step",
    "Target",
    "UsageError",
    "VshxError",
    "canonical",
    "chain_of_disk",
    "chain_of_image",
    "check_merge",
    "checks",
    "commands_hook",
    "comment",
    "comments",
    "definition_steps",
    "delete_steps",
    "refuse_saved_state",
    "follow_up_note",
    "hookimpl",
    "human_size",
    "identity",
    "image_chain",
    "job_flags_argv",
    "journal",
    "libvirt",
    "live_job_step",
    "load_target",
    "names_an_image",
    "non_negative_int",
    "offline_domain_note",
    "preflight",
    "printable",
    "procs",
    "qemuimg",
    "refuse_interrupted",
    "render_chain",
    "report_after_merge",
    "routes",
    "snapshots",
    "table",
    "to_json",
    "JSON_SCHEMA",
    "verify",
    "virsh",
    "underneath",
    "virt",
    "xdg_home",
]
