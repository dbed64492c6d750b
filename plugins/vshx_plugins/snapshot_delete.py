"""snapshot-delete: remove a snapshot's moment on every disk it covers, as libvirt 9.0 does.

An external snapshot froze, on each disk, its *moment file* and put an overlay on it.  Deleting
the snapshot removes that moment: the layer right above the file that holds it (the next
snapshot's moment, or the active layer for the current snapshot) is committed into it, on every
disk, in one plan: live, block commits (a non-active one ends on its own; active commits are all
READY before any pivots), offline, ``qemu-img commit`` and a pointer-only rebase.  Then the
remaining snapshots are re-defined to name the files that now hold their moments (``virsh
snapshot-create --redefine``, the current one kept current), the deleted ones' metadata is
dropped (``virsh snapshot-delete --metadata``), a shut-off domain's definition names the new
chains, and the merged-away layers and deleted snapshots' memory files are removed.  libvirt's
own snapshot-delete is never called to do the work; ``--teach`` says where it would do the same
and where it refuses.  With ``--metadata`` the command is virsh's: metadata only.
"""

from __future__ import annotations

import json
import os
from typing import Any

from vshx.api import (
    DOMAIN,
    FORCE,
    GONE,
    INTACT,
    SCAN,
    UNKNOWN,
    Args,
    Command,
    Opt,
    Plan,
    Session,
    Snapshot,
    Step,
    Target,
    Timeline,
    UsageError,
    Verdict,
    VshxError,
    canonical,
    check_merge,
    commands_hook,
    domain_timeline,
    files,
    journal,
    libvirt,
    load_target,
    moments_reading,
    non_negative_int,
    pivot_step,
    preflight,
    quoted,
    refuse_unfinished,
    render_chain,
    shell_line,
    underneath,
    virsh,
    virt,
)
from vshx_plugins.snapshot_layers import (
    ROUTES,
    DiskWork,
    active_note,
    data_steps,
    layer_at,
    plan_disk,
)
from vshx_plugins.snapshot_metadata import finish_steps, moment_files

BANDWIDTH = Opt(
    "bandwidth", "limit each live block job's copy rate (MiB/s)", "n", convert=non_negative_int
)


def pick_name(dom: libvirt.virDomain, args: Args) -> str:
    """SNAP as virsh picks it: the name given, else the current snapshot with --current."""
    if args.snapshotname and args.current:
        raise UsageError(
            "--snapshotname and --current are mutually exclusive (as in virsh)",
            "give the snapshot's name, or --current alone",
        )
    if args.snapshotname:
        return str(args.snapshotname)
    if not args.current:
        raise UsageError("which snapshot?", "give its name, or --current")
    try:
        name: str = dom.snapshotCurrent(0).getName()
    except libvirt.libvirtError:
        raise VshxError(
            f"domain {dom.name()} has no current snapshot",
            f"name one ({shell_line(['snapshot-list', dom.name()])})",
        ) from None
    return name


def descendants(timeline: Timeline, snap: Snapshot) -> list[Snapshot]:
    found: list[Snapshot] = []
    todo = [snap.name]
    while todo:
        name = todo.pop()
        for child in timeline.snapshots:
            if child.parent == name:
                found.append(child)
                todo.append(child.name)
    return found


def going_snapshots(timeline: Timeline, snap: Snapshot, args: Args) -> list[Snapshot]:
    """The snapshots deleted: SNAP, its descendants too (--children) or only (--children-only)."""
    if args.children_only:
        return descendants(timeline, snap)
    if args.children:
        return [snap, *descendants(timeline, snap)]
    return [snap]


def native_verdict(
    session: Session, timeline: Timeline, snap: Snapshot, args: Args, works: dict[str, DiskWork]
) -> str:
    """What `virsh snapshot-delete` of the connected libvirt does with the same request."""
    flags = ["--children"] if args.children else ["--children-only"] if args.children_only else []
    line = shell_line(virsh(session.uri, "snapshot-delete", timeline.domain, snap.name, *flags))
    version = session.conn.getLibVersion()
    if version < 9_000_000:
        return underneath.native_delete(line, version)[0]
    children = [s for s in timeline.snapshots if s.parent == snap.name]
    current = next((s for s in timeline.snapshots if s.current), None)
    refusal = None
    if args.children or args.children_only:
        refusal = "deletion of external children disk snapshots not supported"
    elif snap.current and children:
        refusal = "deletion of active external snapshot that is not a leaf snapshot"
    elif len(children) > 1:
        refusal = "deletion of external disk snapshot with multiple children snapshots"
    elif children and current is not None and snap.name not in ancestors(timeline, current):
        refusal = "deletion of non-leaf external snapshot that is not in active chain"
    else:
        for disk, moment in snap.moments.items():
            work = works.get(disk)
            chain = work.target.chain if work else None
            layer = (
                next(
                    (
                        lay
                        for lay in chain.layers
                        if lay.canonical == canonical(moment.overlay or "")
                    ),
                    None,
                )
                if chain is not None
                else None
            )
            below = chain.below(layer) if chain is not None and layer is not None else None
            if layer is None:
                refusal = "VM disk source and snapshot disk source are not the same"
            elif below is None or below.canonical != canonical(moment.file or ""):
                refusal = "snapshot VM disk source and parent disk source are not the same"
            if refusal:
                refusal += " " + underneath.diverged(disk)[0]
                break
    pulled = [w.disk for w in works.values() if w.route == "pull"]
    memory = [
        s.memory_file
        for s in going_snapshots(timeline, snap, args)
        if s.memory == "external" and s.memory_file
    ]
    return underneath.native_delete(line, version, refusal or "", pulled, memory)[0]


def ancestors(timeline: Timeline, snap: Snapshot) -> set[str]:
    found = set()
    name = snap.parent
    while name is not None and name not in found:
        found.add(name)
        parent = timeline.find(name)
        name = parent.parent if parent is not None else None
    return found


def metadata_only(session: Session, dom: libvirt.virDomain, name: str, args: Args) -> None:
    """--metadata: exactly virsh's snapshot-delete --metadata (files untouched)."""
    refuse_unfinished(dom)
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY
    extra = ["--metadata"]
    if args.children:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN
        extra.append("--children")
    if args.children_only:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN_ONLY
        extra.append("--children-only")

    def action() -> None:
        try:
            dom.snapshotLookupByName(name, 0).delete(flags)
        except libvirt.libvirtError as exc:
            raise VshxError(
                f"snapshot {name}: {exc.get_error_message()}",
                shell_line(["snapshot-list", dom.name()]),
            ) from None

    plan = Plan(
        f"forget snapshot {name} of {dom.name()} (metadata only, as virsh)",
        method="libvirt snapshot metadata",
    )
    plan.notes.append(
        "--metadata: the files stay as they are; the moments stay where they are, and libvirt "
        "re-points the children at this snapshot's file (snapshot-list shows the moments)"
    )
    plan.add(
        Step(
            f"drop the metadata of snapshot {name}'s children"
            if args.children_only
            else f"drop snapshot {name}'s metadata"
            + (" and its children's" if args.children else ""),
            virsh(session.uri, "snapshot-delete", dom.name(), name, *extra),
            action=action,
        )
    )
    if session.run_plan(plan, args):
        which = f"{name} children" if args.children_only else name
        session.info(f"Domain snapshot {which} deleted (metadata only)")


def cmd_snapshot_delete(session: Session, args: Args) -> None:
    dom = virt.lookup_domain(session.conn, args.domain)
    for key in ("timeout", "async", "keep_relative", "bytes"):
        args.setdefault(key, None)  # the block jobs wait to the end: no other job options
    if args.resume:
        resume(session, dom, args)
        return
    name = pick_name(dom, args)
    if args.route and args.route not in ROUTES:
        raise UsageError(f"unknown route {quoted(args.route)}", f"routes: {', '.join(ROUTES)}")
    if args.metadata:
        metadata_only(session, dom, name, args)
        return
    first = domain_timeline(session, dom)
    snap = first.find(name)
    if snap is None:
        raise VshxError(
            f"domain {dom.name()} has no snapshot {quoted(name)}",
            f"see: {shell_line(['snapshot-list', dom.name()])}",
        )
    going = going_snapshots(first, snap, args)
    if not going:
        session.nothing_to_do(args, f"snapshot {name} has no children")
        return
    covered = sorted({d for s in going for d in s.moments})
    present = {d.target for d in virt.domain_disks(dom)}
    targets = {d: load_target(session, dom.name(), d) for d in covered if d in present}
    for target in targets.values():
        disk = target.chain.disk or ""
        if target.live and target.dom is not None and virt.block_job_info(target.dom, disk):
            raise VshxError(
                f"{dom.name()} {target.chain.disk} has a block job running",
                f"wait for it or end it ({shell_line(['vshx', 'jobs', dom.name()])})",
            )
    timeline = domain_timeline(session, dom)
    snap = timeline.find(name)
    assert snap is not None
    going = going_snapshots(timeline, snap, args)
    names = {s.name for s in going}
    remaining = [s for s in timeline.snapshots if s.name not in names]
    single = not (args.children or args.children_only)
    route = args.route
    if route is None and dom.listAllCheckpoints(0):
        route = "commit"  # libvirt's own route carries checkpoint bitmaps live and offline
    works = {d: plan_disk(target, going, remaining, single, route) for d, target in targets.items()}
    plan = build_plan(session, dom, timeline, snap, going, remaining, works, args)
    if session.run_plan(plan, args):
        for work in works.values():
            session.info(render_chain(virt.domain_chain(dom, work.disk)))
        session.info(
            f"Domain snapshot{'s' if len(going) > 1 else ''} "
            f"{', '.join(s.name for s in going)} deleted"
        )


def resume(session: Session, dom: libvirt.virDomain, args: Args) -> None:
    """Roll an interrupted snapshot-delete forward from its journal: each disk's merge where
    it did not happen (a READY active commit is pivoted), then everything after the merges."""
    entry = journal.read_domain(dom)
    if entry is None or not entry.get("resume") or entry.copied:
        raise VshxError(
            f"no interrupted snapshot-delete on {dom.name()}",
            f"see: {shell_line(['vshx', 'jobs', dom.name()])}",
        )
    if entry.still_running():
        raise VshxError(entry.describe(), "let it finish (vshx jobs shows it)")
    saved = json.loads(str(entry["resume"]))
    gone = [(str(n), p, m) for n, p, m in saved["going"]]
    names = {name for name, _p, _m in gone}
    works: dict[str, DiskWork] = {}
    jobs = {str(j["disk"]): j for j in virt.block_jobs(dom)} if dom.isActive() else {}
    waits: list[Step] = []  # the jobs that end by themselves: waited for, as the plan would
    for disk, was in saved["disks"].items():
        target = load_target(session, dom.name(), disk, journal_ok=True)
        work = DiskWork(disk, target, files=list(was["removed"]), route=was.get("route", "commit"))
        if work.route == "commit":
            work.moves = {canonical(path): was["base"] for path in was["removed"]}
        work.top = layer_at(target, was["top"])
        still = [layer for p in was["removed"] if (layer := layer_at(target, p)) is not None]
        works[disk] = work
        if not still:
            work.top = work.top if work.route == "pull" else None
            continue  # merged already
        job = jobs.get(disk)
        if job is not None and not was["active"]:
            leaves = [canonical(path) for path in was["removed"]]
            wait = journal.wait_step(session, target, entry, job, leaves)
            if wait is not None:  # merged once it has ended: the rest as after a merge
                waits.append(wait)
                work.top = work.top if work.route == "pull" else None
                continue
        if job is not None:
            if not (was["active"] and job.get("ready")):
                raise VshxError(
                    f"a block job still runs on {dom.name()} {disk}",
                    f"wait until it has ended ({shell_line(['vshx', 'jobs', dom.name()])}), then "
                    "recover again",
                )
            work.pivot_only = True
            work.removed = still
            continue
        top, base = work.top, layer_at(target, was["base"])
        if top is None or base is None or top.position >= base.position:
            raise VshxError(
                f"cannot roll {entry.get('plan')} forward on {disk}: its chain is neither as "
                "before nor as after the merge",
                f"nothing was changed; see: {shell_line(['vshx', 'chain', dom.name(), disk])}",
            )
        work.top, work.base = top, base
        work.removed = [base] if work.route == "pull" else target.chain.between(top, base)
    timeline = domain_timeline(session, dom)
    # someone may have deleted a parent meanwhile: libvirt re-parented its children, so a
    # deleted snapshot that is still there takes its parent from the metadata as it is now
    now = {s.name: s.parent for s in timeline.snapshots}
    gone = [(n, now[n] if n in now else p, m) for n, p, m in gone]
    remaining = [s for s in timeline.snapshots if s.name not in names]
    anchor = next(iter(works.values()), None)
    plan = Plan(
        f"roll forward: {entry.get('plan')}",
        method="what the interrupted plan had left to do",
        target=anchor.target if anchor is not None else None,
    )
    plan.intent["resume"] = saved
    plan.notes.append(f"interrupted: {entry.describe()}")
    # the moments as the interrupted plan left them (its merges wrote into their files):
    # what it would have recorded, written once the roll-forward is done
    plan.verdicts = [Verdict.from_json(v) for v in saved.get("verdicts", [])] or None
    foreign = written_since(session, entry, saved["disks"])
    if plan.verdicts and foreign:
        plan.verdicts = unproven(plan.verdicts, foreign)
        for disk, why in foreign.items():
            plan.notes.append(f"{disk}: {why}")
            session.warn(f"{disk}: {why}")
    firsts: list[Step] = []
    pivots: list[Step] = []
    for work in works.values():
        if work.pivot_only:
            pivots.append(pivot_step(session, work.target, work.removed))
        elif work.top is not None and work.base is not None:
            if not work.target.live:  # a killed qemu-img may leave leaked clusters: repair
                written = work.top if work.route == "pull" else work.base
                firsts += journal.leak_repair_steps([written])
            steps, pivot = data_steps(session, plan, work, args)
            firsts += steps
            pivots += pivot
        else:
            plan.notes.append(f"{work.disk}: merged before the interruption")
    plan.intent["pivot"] = bool(pivots)
    journal.refuse_left_paused(dom, entry)  # paused by vshx's own flush: its user resumes it
    finish = finish_steps(session, dom, remaining, gone, works, plan.notes, recovering=True)
    if args.get("keep_files"):  # recover --keep-files: a file that cannot go (atk22 #6)
        for step in [step for step in finish if step.removes or step.argv[:1] == ["rm"]]:
            session.warn(f"keeping {step.argv[-1]}: --keep-files")
            finish.remove(step)
    plan.steps += waits + firsts + pivots + finish
    if anchor is not None and not any(step.changes or step.flush_step for step in plan.steps):
        plan.add(clear_step(session, anchor.target))  # else the runner clears it at the end
    existing = set(dom.snapshotListNames(0))
    if session.run_plan(plan, args):
        for work in works.values():
            session.info(render_chain(virt.domain_chain(dom, work.disk)))
        ordered = list(dict.fromkeys(name for name, _p, _m in gone))
        deleted = [name for name in ordered if name in existing]
        already = [name for name in ordered if name not in existing]
        if deleted:
            which = f"{'s' if len(deleted) > 1 else ''} {', '.join(deleted)}"
            session.info(f"Domain snapshot{which} deleted")
        if already:
            session.info(
                f"snapshot{'s' if len(already) > 1 else ''} {', '.join(already)}: already "
                "deleted by the interrupted snapshot-delete (its metadata was gone)"
            )
        left = journal.read_domain(dom)
        if left is not None and not left.copied:
            raise VshxError(
                f"the roll-forward ran, but vshx's journal on {dom.name()} is still there: "
                f"{left.describe()}",
                f"see: {shell_line(['vshx', 'jobs', dom.name()])}",
            )


def written_since(
    session: Session, entry: journal.Entry, disks: dict[str, dict[str, Any]]
) -> dict[str, str]:
    """Per disk, why its merge's record is not proven: a file the interrupted merge only read
    (its top and the layers it took in, or those a pull copied up) was written after the
    interrupted vshx began, by someone else (atk21 #2: a write into the top while the job
    ran on after a SIGTERM was copied into the base and recorded as the moment's own).
    Local files only (the journal's time is this machine's clock); none read: none."""
    if not session.is_local:
        return {}
    began = entry.get("started") or entry.get("time")
    try:
        limit = int((float(str(began)) + 0.02) * 10**9)
    except (TypeError, ValueError):
        return {disk: "the journal does not say when the plan began" for disk in disks}
    found: dict[str, str] = {}
    for disk, was in disks.items():
        for path in was["removed"]:
            try:
                later = files.stat(path).st_mtime_ns > limit
            except FileNotFoundError:
                continue  # deleted by the plan's own --delete: nothing to read
            except OSError:
                later = True
            if later:
                found[disk] = (
                    f"{os.path.basename(path)}, which the merge only reads, was written after "
                    "the interrupted vshx began: where its moments are now is not proven"
                )
                break
    return found


def unproven(verdicts: list[Verdict], written: dict[str, str]) -> list[Verdict]:
    """The record with every moment of those disks unknown, for the reason given."""
    return [
        v._replace(state=UNKNOWN, holder=None, why=written[v.disk]) if v.disk in written else v
        for v in verdicts
    ]


def clear_step(session: Session, target: Target) -> Step:
    """Clear the journal of a roll-forward that has no step left that changes anything (the
    interrupted plan had done them all): the runner clears it only after a journaled step."""
    argv = journal.clear_argv(target, session.uri)
    return Step(
        "clear vshx's journal",
        argv,
        action=lambda: journal.clear(target),
        here=True,
        changes=False,
    )


def build_plan(
    session: Session,
    dom: libvirt.virDomain,
    timeline: Timeline,
    snap: Snapshot,
    going: list[Snapshot],
    remaining: list[Snapshot],
    works: dict[str, DiskWork],
    args: Args,
) -> Plan:
    moving = [w for w in works.values() if w.top is not None]
    anchor = next(iter(moving or list(works.values())), None)
    live = any(w.target.live for w in works.values())
    what = ", ".join(s.name for s in going)
    routes = sorted({"pulls" if w.route == "pull" else "commits" for w in moving}) or ["jobs"]
    plan = Plan(
        f"delete snapshot{'s' if len(going) > 1 else ''} {what} of {dom.name()} on every disk",
        method=(
            f"live: libvirt block {' and '.join(routes)} on the running domain"
            if live
            else "offline: qemu-img (the domain is shut off)"
        )
        + ", then libvirt snapshot metadata",
        target=anchor.target if anchor is not None else None,
    )
    plan.intent["pivot"] = any(w.active for w in moving) and live
    for work in works.values():
        if work.note:
            plan.notes.append(work.note)
        if work.why:
            plan.notes.append(work.why)
        if work.route == "pull" and work.top is not None and work.base is not None:
            onto = work.onto.name if work.onto is not None else "no backing file"
            plan.notes.append(
                f"{work.disk}: pull {work.base.name} up into {work.top.name} (onto {onto})"
            )
        elif work.top is not None and work.base is not None:
            plan.notes.append(
                f"{work.disk}: commit {', '.join(x.name for x in work.removed)} into "
                f"{work.base.name}" + (active_note(work) if work.active else "")
            )
    if not live and dom.isActive() == 0 and moving:
        plan.notes.append(f"{dom.name()} is shut off: start it only after these ran")
    if session.teaching(args):
        plan.notes.append(native_verdict(session, timeline, snap, args, works))
    for other in remaining:
        lost = [d for d, m in other.moments.items() if m.state in ("gone", "unknown")]
        if lost:
            plan.notes.append(
                f"snapshot {other.name}: its moment on {', '.join(lost)} was "
                f"{other.moments[lost[0]].state} before this plan ({other.moments[lost[0]].why}); "
                "this plan proves nothing about it: it stays so, whatever the steps below do "
                "with its metadata (re-pointed as libvirt would where its parent or files go; "
                "snapshot-cleanup judges it)"
            )
    plan.notes += out_of_chain_leftovers(going, remaining)
    refuse_changing_branches(dom, what, remaining, moving)
    keeps, loses = moment_lines(remaining, going, works)
    plan.keeps = [keeps, loses]
    plan.losing = [s.name for s in going]
    plan.chains = [(w.target.chain, w.target.chain.without(w.removed)) for w in works.values()]
    checks: list[Step] = []
    firsts: list[Step] = []
    pivots: list[Step] = []
    moved = moved_memory_moments(remaining, works)
    claimed: dict[object, int] = {}  # each file system's bytes, summed over the disks
    for work in moving:
        assert work.base is not None and work.top is not None
        names = [g.name for g in going]
        if work.route == "pull":  # the active layer takes the data in; no one's view changes
            checks += check_merge(
                session,
                work.target,
                args,
                work.top,
                work.removed,
                None,
                deleting=names,
                moved=moved,
                claimed=claimed,
            )
        else:
            try:
                checks += check_merge(
                    session,
                    work.target,
                    args,
                    work.base,
                    work.removed,
                    changes_view_of=work.base,
                    deleting=names,
                    moved=moved,
                    claimed=claimed,
                )
            except preflight.SharedFile as exc:  # linked clones on one base: a pull is safe
                if args.route or len(names) != 1 or work.top.position != 0:
                    raise  # only the current snapshot's moment can be pulled up (plan_disk)
                raise VshxError(
                    exc.message,
                    "add --route pull: the data is copied up into the active layer instead, "
                    f"which changes no one else's view; or {exc.hint}",
                ) from None
    for work in sorted(moving, key=lambda w: w.active):  # non-active commits first
        steps, pivot = data_steps(session, plan, work, args)
        firsts += steps
        pivots += pivot
    plan.steps += checks + firsts + pivots
    gone = [(g.name, g.parent, g.memory_file if g.memory == "external" else None) for g in going]
    verdicts = remaining_verdicts(remaining, works)
    plan.intent["resume"] = {
        "argv": ["snapshot-delete", dom.name(), "--resume"],
        "going": gone,
        "disks": {
            w.disk: {
                "top": w.top.path if w.top else "",
                "base": w.base.path if w.base else "",
                "removed": w.files,
                "active": w.active,
                "route": w.route,
            }
            for w in moving
        },
        # a roll-forward reaches this plan's end: it records what this plan would have
        "verdicts": [v._asdict() for v in verdicts],
    }
    plan.steps += finish_steps(session, dom, remaining, gone, works, plan.notes)
    plan.verdicts = verdicts
    return plan


def out_of_chain_leftovers(going: list[Snapshot], remaining: list[Snapshot]) -> list[str]:
    """Notes for the files out of the chain that hold a deleted snapshot's moment and no
    remaining snapshot's: the plan keeps them (it deletes only the layers it merges away), and
    after it nothing names them (an outside tester found one left unsaid).  A file a remaining
    snapshot names in any way (its moment's holder, the file its metadata names, the overlay
    it made) is still named: said of it, the note sent the user to a removal vshx refuses."""
    kept = {
        canonical(path)
        for s in remaining
        for m in s.moments.values()
        for path in (m.holder, m.file, m.overlay)
        if path
    }
    notes = []
    for snap in going:
        for disk, moment in snap.moments.items():
            holder = moment.holder
            if moment.state != INTACT or moment.in_chain or moment.internal or not holder:
                continue
            if canonical(holder) in kept:
                continue
            remove = shell_line(["vshx", "rm", "-f", "--", holder])
            notes.append(
                f"{os.path.basename(holder)} (out of the chain) holds snapshot {snap.name}'s "
                f"moment on {disk}: kept, and named by no snapshot after this plan; remove it "
                f"when you no longer need it: {remove} (vshx checks first that nothing uses it)"
            )
    return notes


def refuse_changing_branches(
    dom: libvirt.virDomain, what: str, remaining: list[Snapshot], moving: list[DiskWork]
) -> None:
    """A delete keeps every other snapshot's moment: refuse (even with --force) when one lives
    in a file outside the chain that reads through the file this plan writes (the branch a
    snapshot-revert left reads through the moment file reverted to).  The removed layers
    such a file reads through are kept (delete_steps removes only files nothing uses)."""
    readers: list[str] = []
    for work in moving:
        written = work.top if work.route == "pull" else work.base
        if written is not None:
            readers += moments_reading(remaining, work.target.chain, [written])
    if readers:
        raise VshxError(
            f"refusing: deleting {what} of {dom.name()} would change the moments other "
            f"snapshots keep in files outside the chain: {'; '.join(readers)}",
            "those files (a branch a snapshot-revert left, or files a pull took out) read "
            "through the file this delete writes; delete those snapshots first, or "
            "go back to that branch (vshx snapshot-revert); virsh snapshot-delete refuses "
            "this too",
        )


def moved_memory_moments(
    remaining: list[Snapshot], works: dict[str, DiskWork]
) -> set[tuple[str, str]]:
    """(snapshot, disk) of the memory snapshots that stay whose proven moment the merges move
    whole into another file, which finish_steps re-points their metadata at: their RAM finds
    the same disk contents there (libvirt's own snapshot-delete re-points them the same way).
    A moment vshx could not prove is never among them: its RAM holds the merge back."""
    return {
        (snap.name, disk)
        for snap in remaining
        if snap.has_memory
        for disk in moment_files(snap, works)
        if snap.moments[disk].kept
    }


def remaining_verdicts(remaining: list[Snapshot], works: dict[str, DiskWork]) -> list[Verdict]:
    """What the plan records for the snapshots that stay: each moment in the file their
    re-pointed metadata names (the merges wrote into some of those files).  A moment that
    was not proven kept before the plan (unknown, gone) stays what it was wherever its
    metadata moves: a merge moves only what was there, it proves nothing."""
    found = []
    for snap in remaining:
        moved = moment_files(snap, works)
        for disk, moment in snap.moments.items():
            holder = moved.get(disk) or (moment.holder if moment.kept else None)
            if not holder:
                continue
            if moment.kept:
                why = "kept by snapshot-delete"
                found.append(
                    Verdict(snap.name, snap.created, disk, INTACT, holder, why, "", holder)
                )
                continue
            why = moment.why.split(" (moved into ", 1)[0] or "vshx could not prove it"
            why = f"{why} (moved into {os.path.basename(holder)} by snapshot-delete, unproven)"
            state = GONE if moment.state == GONE else UNKNOWN
            below = moment.below and state == GONE
            found.append(
                Verdict(snap.name, snap.created, disk, state, None, why, "", holder, below)
            )
    return found


def moment_lines(
    remaining: list[Snapshot], going: list[Snapshot], works: dict[str, DiskWork]
) -> tuple[str, str]:
    """``keeps: s1 (vda: base.qcow2), ...`` and ``loses: s2`` for the plan's header."""
    kept = []
    for snap in remaining:
        where = []
        for disk, moment in snap.moments.items():
            if not moment.kept or not moment.holder:
                where.append(f"{disk}: {moment.state} before this plan")
                continue
            work = works.get(disk)
            now = work.moves.get(canonical(moment.holder), moment.holder) if work else moment.holder
            moved = (
                "" if now == moment.holder else f", moves from {os.path.basename(moment.holder)}"
            )
            where.append(f"{disk}: {os.path.basename(now)}{moved}")
        kept.append(f"{snap.name} ({'; '.join(where)})")
    return (
        f"keeps: {', '.join(kept) or 'no snapshot'}",
        f"loses: {', '.join(s.name for s in going)} (deleted)",
    )


COMMANDS = [
    Command(
        "snapshot-delete",
        "delete a snapshot: remove its moment on every disk and re-point the others",
        cmd_snapshot_delete,
        (
            DOMAIN,
            Opt(
                "snapshotname",
                "the snapshot to delete",
                "name",
                positional=True,
                complete="snapshot",
            ),
            Opt("current", "delete the current snapshot"),
            Opt("children", "delete the snapshot and all its descendants"),
            Opt(
                "children-only",
                "delete the snapshot's descendants, keep the snapshot",
                excludes=("children",),
            ),
            Opt("metadata", "as virsh: only drop libvirt's metadata, touch no file"),
            Opt(
                "route",
                "commit (as libvirt) or pull (where the snapshot's overlay is the disk's "
                "active layer: the current snapshot, or a disk no later snapshot covered); "
                "default: per disk, the one that moves fewer bytes",
                "route",
                excludes=("metadata",),
            ),
            BANDWIDTH,
            Opt(
                "resume",
                "finish an interrupted snapshot-delete from vshx's journal (recover runs it)",
            ),
            Opt(
                "keep-files",
                "with --resume: keep the files it merged away instead of deleting them "
                "(recover --keep-files)",
                needs=("resume",),
            ),
            FORCE,
            SCAN,
        ),
        group="merge",
        changes=True,
        predicted=False,  # snapshot metadata and files: later dry-run lines stop
        description="As virsh snapshot-delete of libvirt 9.0 on external snapshots, on any "
        "libvirt, live or offline, one plan for every disk: commits the layer above the "
        "snapshot's moment into it, re-points the remaining snapshots, updates the "
        "definition, removes merged-away files. --children/--children-only work where "
        "native refuses. --metadata is virsh's.",
    )
]


vshx_register_commands = commands_hook(COMMANDS)
