"""snapshot-cleanup: drop libvirt snapshot metadata whose disk files were merged away.

After commit/pull, libvirt still lists snapshots that name files no longer in any chain of
the domain (or no longer on disk).  Their metadata goes with ``virsh snapshot-delete
--metadata`` (libvirt re-parents the children); snapshots whose files are still in a chain stay.
With --delete-files the merged-away files that nothing else uses are removed too.
"""

from __future__ import annotations

import os

from vshx.api import (
    DOMAIN,
    FORCE,
    SCAN,
    Args,
    Chain,
    Command,
    Layer,
    Opt,
    Plan,
    Session,
    SnapshotInfo,
    Step,
    canonical,
    commands_hook,
    comments,
    current_chain_files,
    delete_steps,
    domain_snapshots,
    human_size,
    libvirt,
    stale_reason,
    table,
    virsh,
    virt,
)


def delete_metadata_step(
    session: Session, dom: libvirt.virDomain, info: SnapshotInfo, why: str
) -> Step:
    snap = info.snapshot

    def action() -> None:
        assert snap is not None
        snap.delete(libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)

    return Step(
        f"forget snapshot {info.name}: {why}",
        virsh(session.uri, "snapshot-delete", dom.name(), info.name, "--metadata"),
        action=action,
    )


def cmd_snapshot_cleanup(session: Session, args: Args) -> None:
    dom = virt.lookup_domain(session.conn, args.domain)
    in_chain = current_chain_files(dom, session.predicted_chains(dom.name()))
    plan = Plan(
        f"drop stale snapshot metadata of {dom.name()}",
        method="libvirt snapshot metadata (virsh snapshot-delete --metadata)",
    )
    rows: list[list[str]] = []
    files: list[Layer] = []
    for info in sorted(domain_snapshots(dom), key=lambda i: i.name):
        why = stale_reason(info, in_chain)
        if why is None:
            rows.append([info.name, "kept", "its files are still in the chain"])
            continue
        if info.has_memory and not args.force:
            rows.append([info.name, "kept", f"{why}, but it holds memory state (--force drops it)"])
            continue
        plan.add(delete_metadata_step(session, dom, info, why))
        rows.append([info.name, "metadata removed", why])
        if args.delete_files:
            for path in info.files:
                if os.path.exists(path) and canonical(path) not in in_chain:
                    files.append(Layer(path, "", -1, allocated=os.stat(path).st_blocks * 512))
    if files:
        # no disk of ours to pass over: stale files are in none of this domain's chains
        removals = delete_steps(session, files, Chain([], domain=dom.name()))
        plan.steps += removals
        removed = {step.argv[-1] for step in removals}
        for layer in files:
            verdict = "file removed" if layer.path in removed else "file kept"
            why = (
                f"{human_size(layer.allocated)} no longer used"
                if layer.path in removed
                else "something else still uses it"
            )
            rows.append([os.path.basename(layer.path), verdict, why])
    if not plan.steps:
        session.nothing_to_do(args, f"every snapshot of {dom.name()} still matches the disks")
        return
    if session.run_plan(plan, args):
        session.info(table(rows, ["Snapshot", "Verdict", "Why"]))
    else:  # --dry-run: the verdicts as comments (the one escaper: a snapshot name may hold
        # a newline), so the output stays a runnable script that runs nothing else
        session.write_script(comments(" | ".join(r) for r in rows))


COMMANDS = [
    Command(
        "snapshot-cleanup",
        "forget libvirt snapshots whose files were merged away",
        cmd_snapshot_cleanup,
        (
            DOMAIN,
            Opt("delete-files", "also remove merged-away files that nothing else uses"),
            FORCE,
            SCAN,
        ),
        group="merge",
        changes=True,
        description="Compares each snapshot's disk files with the disks' current chains; "
        "deletes only metadata (virsh snapshot-delete --metadata).",
    )
]


vshx_register_commands = commands_hook(COMMANDS)
