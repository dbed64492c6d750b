"""snapshot-cleanup: make libvirt's snapshot metadata say where each snapshot's moment is.

A snapshot is judged by its point in time on every disk it covers (vshx.storage.moments), not
by the files it created.  A snapshot whose moment is gone on every disk is forgotten (``virsh
snapshot-delete --metadata``; libvirt re-parents its children); one whose moment a commit moved
into another file is re-defined to name that file (``virsh snapshot-create --redefine``, as
libvirt's own snapshot-delete re-points the remaining snapshots); one that is gone on some disks
only (half-merged) or that vshx cannot judge is kept and reported, with the command that
finishes it.  With --delete-files, the files that left every chain and hold no kept moment are
removed; so are files out of the chain that only hold moments of the current snapshot's own
history (a pull took them out: those snapshots are forgotten too).  A branch a revert left
behind is never removed here: it is another history, removed only by naming it
(snapshot-delete).
"""

from __future__ import annotations

import os

from vshx.api import (
    DOMAIN,
    FORCE,
    GONE,
    INTACT,
    MERGED,
    SCAN,
    UNKNOWN,
    Args,
    Chain,
    Command,
    Layer,
    Opt,
    Plan,
    Session,
    Snapshot,
    Step,
    Timeline,
    VshxError,
    birth_ns,
    canonical,
    commands_hook,
    comments,
    delete_steps,
    domain_timeline,
    files,
    finish_command,
    forget_step,
    human_size,
    lock_domain,
    merged_aliases,
    redefine_step,
    refuse_unfinished,
    repointed_xml,
    shell_line,
    table,
    virsh,
    virt,
)


def verdict(timeline: Timeline, snap: Snapshot, args: Args, domain: str) -> tuple[str, str]:
    """(what happens to the snapshot, why) from its moments on every disk."""
    moments = "; ".join(f"{d}: {m.describe()}" for d, m in snap.moments.items())
    if snap.gone_everywhere:
        if snap.has_memory and not args.force:
            return "kept", f"{moments}; it holds memory state (--force forgets it)"
        return "forget", moments
    if snap.half_merged:
        finish = finish_command(timeline, snap, domain)
        how = f"; to finish: {finish}" if finish else ""
        return "kept", f"half-merged: {moments}{how}"
    if snap.state_unknown:
        return "kept", f"cannot tell: {moments}"
    if any(m.state == MERGED for m in snap.moments.values()):
        return "re-point", moments
    return "kept", moments


def detached_only(snap: Snapshot) -> bool:
    """Every moment of the snapshot is intact, but only in files out of the disks' chains."""
    return bool(snap.moments) and all(
        m.state == INTACT and not m.in_chain for m in snap.moments.values()
    )


def cmd_snapshot_cleanup(session: Session, args: Args) -> None:
    dom = virt.lookup_domain(session.conn, args.domain)
    if not session.planning_only(args):
        lock_domain(session, dom)  # one vshx at a time changes a domain (atk9 F5)
    refuse_unfinished(dom)
    if args.delete_files and dom.hasManagedSaveImage(0):
        raise VshxError(
            f"{dom.name()} has saved state (a managed-save image): its RAM may restore onto "
            "files out of the chain, so --delete-files removes nothing now",
            "start it and shut it down cleanly, or "
            f"{shell_line(['virsh', 'managedsave-remove', dom.name()])}; "
            "without --delete-files only metadata changes",
        )
    timeline = domain_timeline(session, dom, strict=True)
    plan = Plan(
        f"make the snapshot metadata of {dom.name()} match its moments",
        method="libvirt snapshot metadata (virsh snapshot-delete --metadata, "
        "snapshot-create --redefine)",
    )
    plan.domain = dom  # its script checks the domain first (its state, snapshots, files)
    verdicts = {s.name: verdict(timeline, s, args, dom.name()) for s in timeline.snapshots}
    removals: list[Step] = []
    file_rows: list[list[str]] = []
    if args.delete_files:
        # files out of every chain that only forgettable snapshots need; a snapshot whose
        # moments live only in such files goes with them, if every one of them is removed
        line = timeline.current_line()
        detached = [
            s
            for s in timeline.snapshots
            if verdicts[s.name][0] == "kept" and detached_only(s) and s.name in line
        ]
        for snap in timeline.snapshots:
            if verdicts[snap.name][0] == "kept" and detached_only(snap) and snap not in detached:
                what, why = verdicts[snap.name]
                verdicts[snap.name] = (what, f"{why}; {branch_note(snap, dom.name(), line)}")
        going = [s for s in timeline.snapshots if verdicts[s.name][0] == "forget"] + detached
        files, foreign = unneeded_files(timeline, going, session.is_local)
        # every candidate passes delete_steps' refusals (internal snapshots): then those not
        # provably the files vshx left are kept (with their data files), and say why
        removals = delete_steps(session, files, Chain([], domain=dom.name()), kept=foreign)
        removed = {canonical(step.argv[-1]) for step in removals}
        for snap in detached:
            if {canonical(m.holder or "") for m in snap.moments.values()} <= removed:
                why = verdicts[snap.name][1]
                verdicts[snap.name] = ("forget", f"{why}; --delete-files removes those files")
        file_rows = [
            file_row(layer, canonical(layer.path) in removed)
            for layer in files
            if canonical(layer.path) not in foreign
        ]
        file_rows += [[os.path.basename(path), "file kept", why] for path, why in foreign.items()]
        layers = {canonical(layer.path) for layer in files}
        file_rows += [  # the external data files removed with their layers
            [os.path.basename(step.argv[-1]), "file removed", step.description.split(", ", 1)[-1]]
            for step in removals
            if canonical(step.argv[-1]) not in layers
        ]
    repoints: list[Step] = []
    forgets: list[Step] = []
    rows: list[list[str]] = []
    aliases = merged_aliases(timeline)
    for snap in timeline.snapshots:
        what, why = verdicts[snap.name]
        if what == "forget":
            forgets.append(forget_step(session, dom, snap.name, why))
        elif (
            what == "re-point"
            and (
                xml := repointed_xml(snap, timeline.formats, aliases, in_chains=timeline.in_chains)
            )
            is not None
        ):
            moved = ", ".join(
                f"{disk}: {os.path.basename(m.holder or '')}"
                for disk, m in snap.moments.items()
                if m.state == "merged"
            )
            why = f"names the files that show its moment now ({moved})"
            repoints.append(redefine_step(session, dom, snap, xml, why))
        elif (
            what == "kept"
            and (
                xml := repointed_xml(
                    snap, timeline.formats, aliases, moments=False, in_chains=timeline.in_chains
                )
            )
            is not None
        ):
            # its <domain> names files a commit merged away (a disk it did not cover, a
            # backing chain): re-pointed as libvirt does, its own moments left as they are
            why += "; its <domain> no longer names merged-away files"
            repoints.append(redefine_step(session, dom, snap, xml, why))
        label = {"forget": "metadata removed", "re-point": "re-pointed"}.get(what, "kept")
        rows.append([snap.name, label, why])
    rows += file_rows
    plan.steps += repoints + forgets + removals  # re-point while every parent still exists
    if not plan.steps:
        unsure = [s.name for s in timeline.snapshots if s.state_unknown]
        session.nothing_to_do(
            args,
            f"no snapshot of {dom.name()} to forget or re-point"
            + (f" ({', '.join(unsure)}: cannot tell, kept)" if unsure else ""),
        )
        if unsure and not session.planning_only(args):
            forget = virsh(session.uri, "snapshot-delete", dom.name(), unsure[0], "--metadata")
            session.info(
                f"hint: {shell_line(['vshx', 'snapshot-list', dom.name()])} says why each is "
                f"unknown; where you know a snapshot's moment is gone, {shell_line(forget)} "
                "forgets it (its files stay)"
            )
        if not session.planning_only(args) and rows:
            session.info(table(rows, ["Snapshot", "Verdict", "Why"]))
        return
    if session.run_plan(plan, args):
        session.info(table(rows, ["Snapshot", "Verdict", "Why"]))
    else:  # --dry-run: the verdicts as comments (the one escaper: a snapshot name may hold
        # a newline), so the output stays a runnable script that runs nothing else
        session.write_script(comments(" | ".join(r) for r in rows))


def branch_note(snap: Snapshot, domain: str, line: set[str]) -> str:
    """Why a snapshot out of every chain keeps its files under --delete-files."""
    delete = shell_line(["vshx", "snapshot-delete", domain, snap.name])
    if not line:
        return f"no snapshot is current, so its history is unknown: its files stay ({delete})"
    return f"on a branch the current snapshot does not descend from: its files stay ({delete})"


def file_row(layer: Layer, removed: bool) -> list[str]:
    why = (
        f"{human_size(layer.allocated)} no longer needed" if removed else "something still uses it"
    )
    return [os.path.basename(layer.path), "file removed" if removed else "file kept", why]


def unneeded_files(
    timeline: Timeline, going: list[Snapshot], local: bool
) -> tuple[list[Layer], dict[str, str]]:
    """Files the going snapshots name (moment files, overlays) that no disk's chain uses and
    that hold no moment of a snapshot that stays (nor one vshx cannot judge); and, of those,
    the ones vshx cannot prove are the files its merges left, with why (they are kept)."""
    names = {s.name for s in going}
    needed = {
        canonical(path)
        for s in timeline.snapshots
        if s.name not in names
        for m in s.moments.values()
        for path in (m.holder if m.kept else None, m.file if m.state == UNKNOWN else None)
        if path
    }
    found: dict[str, Layer] = {}
    foreign: dict[str, str] = {}
    for snap in going:
        for moment in snap.moments.values():
            for path in (moment.file, moment.overlay):
                if not path or moment.internal or not files.exists(path):
                    continue
                key = canonical(path)
                if key in needed or key in timeline.in_chains:
                    continue
                why = not_left_by_vshx(timeline, snap, moment.disk, path, local)
                why = why or gone_but_untouched(snap, moment.disk, path)
                if why:
                    foreign.setdefault(key, why)
                found.setdefault(
                    key, Layer(path, "", -1, allocated=files.stat(path).st_blocks * 512)
                )
    return list(found.values()), foreign


def gone_but_untouched(snap: Snapshot, disk: str, path: str) -> str:
    """Why a moment file judged gone is kept ("" when it is not): fail closed when it was
    judged gone while already out of the chain, only because its view reads through a file a
    merge wrote or deleted (``Moment.below``, as vshx's record says: Verdict.below), and
    the file itself was last written no later than its snapshot (the few seconds libvirt's
    whole-second creation time leaves): its own bytes are the moment's, and a judgment of a
    change below it is never worth the only copy.  A layer a commit itself took out of the
    chain ("sits on W, which changes") was judged from the chain: removed as before."""
    moment = snap.moments[disk]
    if moment.state != GONE or not moment.file or canonical(moment.file) != canonical(path):
        return ""
    if not moment.below:
        return ""
    name = os.path.basename(path)
    try:
        written = files.stat(path).st_mtime_ns
    except OSError:
        return f"{name} cannot be read: kept"
    if written > (snap.created + 3) * 10**9:
        return ""
    return (
        f"{name} is unchanged since snapshot {snap.name} was taken; its moment was judged gone "
        "by a file its view reads, so it is kept: remove it yourself if that moment is not needed"
    )


def not_left_by_vshx(timeline: Timeline, snap: Snapshot, disk: str, path: str, local: bool) -> str:
    """Why the file now at ``path`` is not provably the one vshx's record of this moment is
    about ("" when it is): a file born after the snapshot was taken, or created or changed
    after vshx recorded the moment (its change time, which no user can set back, is later than
    the record's stamp), may be one a user put under a name vshx had freed (commit --delete
    removed the original)."""
    name = os.path.basename(path)
    record = timeline.ledger.get((snap.name, snap.created, disk))
    if record is None or not record.stamp.isdigit():
        return (
            f"vshx has no record of the merge that left {name} out of the chain, so it cannot "
            "prove this is the file that merge left: remove it yourself if it is"
        )
    try:
        changed = max(files.stat(path).st_ctime_ns, files.stat(path, False).st_ctime_ns)
    except OSError:
        return f"{name} cannot be read: kept"
    # the file that held a moment existed when the snapshot was taken (it was frozen then, or
    # made as its overlay, or is an older layer a commit moved it into): one born later is
    # not it, whatever later plans re-stamped (a birth time, where known, cannot be set back)
    born = birth_ns(path, local)
    if born is not None and born > (snap.created + 3) * 10**9:
        return (
            f"{name} was created after snapshot {snap.name} was taken (a file put under a name "
            "vshx had freed?): not provably the file its merge left, kept"
        )
    if changed > int(record.stamp):
        return (
            f"{name} was created or changed after vshx recorded {snap.name}'s moment (a file "
            "put under a name vshx had freed?): not provably the file its merge left, kept"
        )
    return ""


COMMANDS = [
    Command(
        "snapshot-cleanup",
        "make snapshot metadata match the moments the disks still hold",
        cmd_snapshot_cleanup,
        (
            DOMAIN,
            Opt(
                "delete-files",
                "also remove files that left every chain and hold no kept snapshot's moment",
            ),
            FORCE,
            SCAN,
        ),
        group="merge",
        changes=True,
        predicted=False,  # snapshot metadata and files: later dry-run lines stop
        description="Judges each snapshot by its moment on every disk: forgets those gone "
        "everywhere (virsh snapshot-delete --metadata), re-points those a commit moved "
        "(virsh snapshot-create --redefine), reports half-merged ones with the command that "
        "finishes them.",
    )
]


vshx_register_commands = commands_hook(COMMANDS)
