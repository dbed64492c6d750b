"""What every merge command shares: live job steps, and the aftermath (report, checks, notes).

The options they share are declared in spec/options.py, deleting merged-away files in
merging/deletion.py.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.merging import checks, preflight
from vshx.merging.savedstate import refuse_saved_state
from vshx.plans import underneath
from vshx.plans.plan import Plan, Step, shell_line, virsh
from vshx.plans.target import Target
from vshx.spec.spec import Args
from vshx.storage import virt
from vshx.storage.chain import Chain, Layer, is_json_name
from vshx.storage.libvirt_lazy import libvirt

if TYPE_CHECKING:
    from vshx.plans.context import Context as Session


def job_flags_argv(args: Args) -> list[str]:
    """The virsh spelling of the options a live job shares (bandwidth, timeout, wait)."""
    argv: list[str] = []
    if args.keep_relative:
        argv.append("--keep-relative")
    if args.bandwidth is not None:
        argv += ["--bandwidth", str(args.bandwidth)]
        if args.bytes:
            argv.append("--bytes")
    if args.get("background"):
        return argv  # virsh's own default: start the job and return
    if args.timeout:
        argv += ["--timeout", str(args.timeout)]
    if args.get("async"):
        argv.append("--async")
    return argv + ["--wait", "--verbose"]


def live_job_step(
    session: Session,
    target: Target,
    args: Args,
    description: str,
    argv: list[str],
    start: Callable[[], None],
    *,
    leaves: list[Layer],
    active: bool = False,
    pivot: bool = True,
    underneath: list[str] | None = None,
    ready_only: bool = False,
) -> Step:
    """A Step that starts a block job and waits for it by events, with the virsh equivalent.

    ``leaves``: the layers the finished job removes from the chain (how its end is proven
    when no event arrives).  ``ready_only``: an active job stops at READY (``pivot_step``
    ends it), so that several disks' jobs are all READY before any pivots.
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
            wait=not args.get("background"),
            abort_async=bool(args.get("async")),
            stream=session.err,
            quiet=session.quiet,
            ready_only=ready_only,
            trace=session.err if session.trace else None,
        )

    step = Step(description, argv, action=action, underneath=underneath)
    if not active:  # a commit below the active layer, a pull: it ends by itself
        step.completes = sorted(layer.canonical for layer in leaves)
    step.background = bool(args.get("background"))
    return step


def pivot_step(session: Session, target: Target, leaves: list[Layer]) -> Step:
    """The Step that pivots a disk's READY active commit (``virsh blockjob D DISK --pivot``)."""
    assert target.dom is not None
    dom, disk = target.dom, target.chain.disk or ""

    def action() -> None:
        from vshx.plans.blockjob import pivot_ready_job

        pivot_ready_job(
            session.conn,
            dom,
            disk,
            label=f"pivot {disk}",
            leaves=frozenset(layer.canonical for layer in leaves),
            stream=session.err,
            quiet=session.quiet,
            trace=session.err if session.trace else None,
        )

    return Step(
        f"pivot {disk} onto the base its active commit wrote",
        virsh(session.uri, "blockjob", dom.name(), disk, "--pivot"),
        action=action,
        underneath=underneath.pivot(),
    )


def report_after_merge(
    session: Session, target: Target, args: Args, plan: Plan | None = None
) -> None:
    """Show the chain as it is now, say if it is not the one the plan predicted, and point at
    snapshot-cleanup when metadata went stale."""
    from vshx.storage.chain_view import render_chain

    if args.get("background") or session.quiet:
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
        cleanup_hint(session, target.dom, {chain.disk or "": chain})


def cleanup_hint(session: Session, dom: libvirt.virDomain, known: dict[str, Chain]) -> None:
    """Point at snapshot-cleanup when a snapshot's metadata no longer names its moment."""
    from vshx.merging.moments import read_domain_timeline

    try:
        timeline = read_domain_timeline(dom, known)
    except VshxError as exc:
        session.warn(f"{exc.message}; not judging the snapshots")
        return
    lost = [s.name for s in timeline.snapshots if s.gone_everywhere]
    moved = [
        s.name for s in timeline.snapshots if any(m.state == "merged" for m in s.moments.values())
    ]
    half = [s.name for s in timeline.snapshots if s.half_merged]
    said = []
    if lost:
        said.append(f"forgets {', '.join(lost)} (moment lost)")
    if moved:
        said.append(f"re-points {', '.join(moved)} (moment moved into another file)")
    if half:
        said.append(f"reports {', '.join(half)} (half-merged) with how to finish")
    if said:
        session.info(f"hint: run snapshot-cleanup {dom.name()}: it {'; '.join(said)}")


def check_merge(
    session: Session,
    target: Target,
    args: Args,
    writes: Layer,
    moves: list[Layer],
    changes_view_of: Layer | None,
    moving: Callable[[], int] | None = None,
    deleting: Collection[str] = (),
    moved: Collection[tuple[str, str]] = (),
    claimed: dict[object, int] | None = None,
) -> list[Step]:
    """The pre-flight every merge shares; raises before anything changes, and returns the
    checks the plan must also run first (so a printed script stops where vshx would).

    ``writes`` is the file whose content changes, ``moves`` the layers whose data moves.
    When ``changes_view_of`` is given (commit: the base), chains that use it other than through
    ``moves[0]`` are refused.  A pull changes no one's view: the active layer's stays the same.
    On a remote URI the same checks read the files on that host (storage/host.py).
    ``moving``: the bytes the merge writes, from the allocation map; more than the files hold
    when clusters are compressed (they are written out whole), so the room check takes both.
    ``deleting``: snapshots the plan deletes (their saved RAM does not hold the merge back);
    ``moved``: memory snapshots' moments it moves and re-points (savedstate.refuse_saved_state).
    ``claimed``: the bytes the plan's earlier merges write, per file system (checks.room_for).
    """
    preflight.refuse_unsafe_start(session, target, args)
    if changes_view_of is None:  # a pull writes only the active layer; the others are read
        refuse_saved_state(target, [writes], deleting, read_only=moves, moved=moved)
    else:
        refuse_saved_state(target, [writes, *moves], deleting, moved=moved)
    if changes_view_of is not None:
        preflight.refuse_shared(
            session,
            changes_view_of.path,
            target.chain,
            args.force,
            "committing into",
            through=moves[0].path,
            snapshots=target.snapshots(),
            ahead=target.ahead,
        )
        target.ahead = None  # answered: a later scan of this command reads again
    return [checks.room_for(writes, moves, moving() if moving else 0, claimed)]


def follow_up_note(plan: Plan, target: Target) -> None:
    """After a merge on a domain, its libvirt snapshots of the merged layers go stale."""
    if target.dom is not None:
        plan.notes.append(
            f"afterwards: {shell_line(['vshx', 'snapshot-cleanup', target.dom.name()])} makes the "
            "snapshot metadata "
            "match: re-points the snapshots whose moments moved, forgets those lost on every "
            "disk (virsh snapshot-create --redefine, snapshot-delete --metadata)"
        )


def offline_domain_note(plan: Plan, target: Target) -> None:
    if target.dom is not None and not target.live:
        plan.notes.append(f"{target.chain.domain} is shut off: start it only after these ran")


def qemu_img_commit_step(
    chain: Chain, top: Layer, base: Layer, description: str, rate: Collection[str] = ()
) -> Step:
    """``qemu-img commit -b BASE TOP``: what ``top`` shows written into ``base``.  Refused
    (nothing changed) where the layer just above ``base`` names it with a ``json:`` backing
    name: qemu-img finds ``-b`` by the name that header writes, and would stop midway with
    "Did not find ... in the backing chain" (atk14 F4)."""
    above = chain.above(base)
    if above is not None and is_json_name(above.backing or ""):
        renaming = ["vshx", "rebase", above.path, "--backing", base.path]
        renaming += ["-F", preflight.require_format(base)]
        raise VshxError(
            f"{above.name} names {base.name} with a json: backing name, and qemu-img commit "
            f"finds its base (-b) by the name that header writes: it would stop midway",
            "nothing was changed; give it a plain name first, as a pointer-only change (it "
            f"shows the same): {shell_line(renaming)}; or start the domain and commit live "
            "(libvirt opens the chain by its nodes)",
        )
    return Step(
        description,
        [
            "qemu-img",
            "commit",
            "-q",
            "-f",
            preflight.require_format(top),
            *rate,
            "-b",
            base.path,
            top.path,
        ],
        underneath=underneath.qemu_img_commit(),
    )


def pointer_step(overlay: Layer, base: Layer, top: Layer, keep_relative: bool) -> Step:
    """After ``qemu-img commit`` of ``top`` into ``base``: the layer above ``top`` pointed at
    ``base`` by its header alone (``rebase -u``), proven safe as ``base`` now shows exactly
    what ``top`` showed."""
    written = preflight.relative_or_absolute(base, overlay, keep_relative)
    return Step(
        f"point {overlay.name} at {base.name} (pointer only: {base.name} now shows "
        f"exactly what {top.name} showed)",
        [
            "qemu-img",
            "rebase",
            "-u",
            "-f",
            preflight.require_format(overlay),
            "-F",
            preflight.require_format(base),
            "-b",
            written,
            overlay.path,
        ],
        underneath=underneath.rebase(unsafe=True, flatten=False, after_commit=True),
    )
