"""What every merge command shares: option declarations, live job steps, and the aftermath.

Declared once here so commit, pull and rebase spell and complete these options identically.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.merging import checks, preflight
from vshx.merging.savedstate import refuse_saved_state
from vshx.plans.plan import Plan, Step
from vshx.spec.spec import Args, Opt, non_negative_int
from vshx.storage import virt
from vshx.storage.chain import Chain, Layer, human_size

if TYPE_CHECKING:
    from vshx.plans.context import Context as Session

BASE = Opt("base", "the lower layer (path, file name, or vda[N])", "ref", complete="layer")
BANDWIDTH = Opt(
    "bandwidth",
    "limit the copy rate (MiB/s, or bytes/s with --bytes)",
    "n",
    convert=non_negative_int,
)
BYTES = Opt("bytes", "--bandwidth is in bytes/s")
TIMEOUT = Opt(
    "timeout", "abort the job after this many seconds", "seconds", convert=non_negative_int
)
ASYNC = Opt("async", "start the block job and return without waiting")
FORCE = Opt("force", "go ahead although other images or domains use a file that changes")
SCAN = Opt(
    "scan",
    "also look in this directory for images whose chains use the files that change",
    "dir",
    complete="directory",
)
KEEP_RELATIVE = Opt("keep-relative", "write relative backing file names")
WAIT = Opt("wait", "virsh's spelling, accepted: vshx waits unless --async", excludes=("async",))
VERBOSE = Opt("verbose", "virsh's spelling, accepted: vshx always reports progress")
JOB_OPTIONS = (KEEP_RELATIVE, BANDWIDTH, BYTES, TIMEOUT, ASYNC, WAIT, VERBOSE)


def job_flags_argv(args: Args) -> list[str]:
    """The virsh spelling of the options a live job shares (bandwidth, timeout, wait)."""
    argv: list[str] = []
    if args.keep_relative:
        argv.append("--keep-relative")
    if args.bandwidth is not None:
        argv += ["--bandwidth", str(args.bandwidth)]
        if args.bytes:
            argv.append("--bytes")
    if args.get("async"):
        return argv
    if args.timeout:
        argv += ["--timeout", str(args.timeout)]
    return argv + ["--wait", "--verbose"]


def live_job_step(
    session: Session,
    target: preflight.Target,
    args: Args,
    description: str,
    argv: list[str],
    start: Callable[[], None],
    *,
    leaves: list[Layer],
    active: bool = False,
    pivot: bool = True,
    underneath: list[str] | None = None,
) -> Step:
    """A Step that starts a block job and waits for it by events, with the virsh equivalent.

    ``leaves``: the layers the finished job removes from the chain (how its end is proven
    when no event arrives).
    """
    assert target.dom is not None
    dom, disk = target.dom, target.chain.disk or ""

    def action() -> None:
        from vshx.plans.blockjob import run_block_job

        run_block_job(
            session.conn,
            dom,
            disk,
            start,
            label=description.split(":")[0],
            leaves=frozenset(layer.canonical for layer in leaves),
            active=active,
            pivot=pivot,
            timeout=args.timeout or None,
            wait=not args.get("async"),
            stream=session.err,
            quiet=session.quiet,
        )

    return Step(description, argv, action=action, underneath=underneath)


def delete_steps(session: Session, files: list[Layer], keep_users_of: Chain) -> list[Step]:
    """rm steps for merged-away files that nothing else uses (checked now, and again right
    before each unlink)."""
    steps = []
    going = {f.path for f in files}
    index = preflight.UsageIndex(session, keep_users_of, going=going)
    for layer in files:
        users = index.users_of(layer.path)
        if users:
            session.warn(f"keeping {layer.path}: still used by {'; '.join(users)}")
            continue
        steps.append(
            Step(
                f"delete merged-away {layer.name} ({human_size(layer.allocated)})",
                ["rm", "-f", "--", layer.path],
                action=_delete_after_looking_again(session, keep_users_of, layer, going),
            )
        )
    return steps


def _delete_after_looking_again(
    session: Session, chain: Chain, layer: Layer, going: set[str]
) -> Callable[[], None]:
    """The rm runs only if, read again right before the unlink (under the chain's lock, which
    the command took when it loaded the chain), no disk of the domain and no other domain,
    image or pool volume uses the file, and the path still names the file that was checked."""
    from vshx.storage.identity import identity

    planned = identity(layer.path)

    def action() -> None:
        import os

        if not os.path.lexists(layer.path):
            return  # gone already: as rm -f
        if chain.domain is not None:
            from vshx.storage.definition import named_files
            from vshx.storage.snapshots import current_chain_files

            dom = virt.lookup_domain(session.conn, chain.domain)
            # every disk, read again: its headers, and what its definitions name
            if layer.canonical in current_chain_files(dom) | named_files(dom):
                raise VshxError(
                    f"not deleting {layer.path}: a disk or definition of {chain.domain} still "
                    "names it",
                    f"see: vshx chain {chain.domain}",
                    clean=True,
                )
        index = preflight.UsageIndex(session, chain, going=going)
        users = index.users_of(layer.path)
        if users or identity(layer.path) != planned:
            why = f"still used by {'; '.join(users)}" if users else "another file is there now"
            raise VshxError(
                f"not deleting {layer.path}: {why}",
                f"nothing was deleted; look at it ({index.scanned()})",
                clean=True,
            )
        session.info(f"deleting merged-away {layer.path}")
        try:
            os.unlink(layer.path)
        except FileNotFoundError:
            pass

    return action


def remove_pasted(session: Session, path: str) -> None:
    """``rm -f -- FILE`` of a printed --delete step, pasted back into vshx: the same look
    again as the step itself; only a disk image (qcow2 by header, or an image suffix) that no
    domain, image or pool volume uses any more is removed."""
    import os

    from vshx.storage.chain import Chain
    from vshx.storage.paths import has_image_suffix

    if not os.path.lexists(path):
        return  # as rm -f
    if not (preflight.is_qcow2(path) or has_image_suffix(path)) or not os.path.isfile(path):
        raise VshxError(
            f"not deleting {path}: vshx removes only disk images", "use rm yourself for others"
        )
    index = preflight.UsageIndex(session, Chain([Layer(os.path.abspath(path), "", 0)]))
    users = index.users_of(path)
    if users:
        raise VshxError(
            f"not deleting {path}: still used by {'; '.join(users)}",
            f"merge it out of those chains first ({index.scanned()})",
        )
    if session.dry_run:
        from vshx.plans.plan import shell_line

        session.print(shell_line(["rm", "-f", "--", path]))
        return
    session.info(f"deleting {path}")
    os.unlink(path)


def report_after_merge(
    session: Session, target: preflight.Target, args: Args, plan: Plan | None = None
) -> None:
    """Show the chain as it is now, say if it is not the one the plan predicted, and point at
    snapshot-cleanup when metadata went stale."""
    from vshx.storage.chain_view import render_chain

    if args.get("async") or session.quiet:
        return
    if target.dom is not None:
        chain = virt.domain_chain(target.dom, target.chain.disk or "")
    else:
        from vshx.storage.chain import image_chain

        chain = image_chain(target.chain.active.path)
    session.info(render_chain(chain))
    if plan is not None and plan.after is not None and plan.after.arrows() != chain.arrows():
        session.warn(f"the chain is not the predicted {plan.after.arrows()}; look at it above")
    if target.dom is not None:
        from vshx.storage.snapshots import stale_snapshots

        try:
            stale = stale_snapshots(target.dom, known=chain)
        except VshxError as exc:
            session.warn(f"{exc.message}; not looking for stale snapshots")
            return
        if stale:
            names = ", ".join(sorted(info.name for info, _why in stale))
            session.info(
                f"hint: libvirt snapshots {names} now name merged-away files; "
                f"run: snapshot-cleanup {target.dom.name()}"
            )


def check_merge(
    session: Session,
    target: preflight.Target,
    args: Args,
    writes: Layer,
    moves: list[Layer],
    changes_view_of: Layer | None,
) -> list[Step]:
    """The pre-flight every merge shares; raises before anything changes, and returns the
    checks the plan must also run first (so a printed script stops where vshx would).

    ``writes`` is the file whose content changes, ``moves`` the layers whose data moves.
    When ``changes_view_of`` is given (commit: the base), chains that use it other than through
    ``moves[0]`` are refused.  A pull changes no one's view: the active layer's stays the same.
    Checks that read local files are skipped for a remote URI (only --dry-run gets there).
    """
    preflight.refuse_unsafe_start(session, target, args)
    refuse_saved_state(target, [writes, *moves])
    if session.is_local:
        if changes_view_of is not None:
            preflight.refuse_shared(
                session,
                changes_view_of.path,
                target.chain,
                args.force,
                "committing into",
                through=moves[0].path,
            )
        return [checks.room_for(writes, moves)]
    return []


def follow_up_note(plan: Plan, target: preflight.Target) -> None:
    """After a merge on a domain, its libvirt snapshots of the merged layers go stale."""
    if target.dom is not None:
        plan.notes.append(
            f"afterwards: vshx snapshot-cleanup {target.dom.name()} forgets the libvirt snapshots "
            "that name merged-away files (virsh snapshot-delete DOMAIN SNAP --metadata)"
        )


def offline_domain_note(plan: Plan, target: preflight.Target) -> None:
    if target.dom is not None and not target.live:
        plan.notes.append(f"{target.chain.domain} is shut off: start it only after these ran")
