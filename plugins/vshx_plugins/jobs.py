"""jobs and recover: what is running or was interrupted, and how to bring it to a clean end.

``jobs`` lists every block job on the host (started by vshx or not) and every interrupted vshx
operation (its journal), each with the command that resolves it.  ``recover`` pivots a READY
active commit that was meant to pivot (or as told), aborts a job with ``--abort``, repairs
leaked clusters after an interrupted ``qemu-img`` step, checks the chain, and clears the
journal.  Its ``--dry-run`` prints the virsh/qemu-img commands.
"""

from __future__ import annotations

import time

from vshx.api import (
    DISK,
    DOMAIN_OR_IMAGE,
    JSON,
    Args,
    Command,
    Opt,
    Plan,
    Session,
    Step,
    UsageError,
    VshxError,
    commands_hook,
    definition_steps,
    journal,
    libvirt,
    load_target,
    names_an_image,
    render_chain,
    table,
    virsh,
    virt,
)
from vshx.api import (
    DOMAIN as DOMAIN_OPT,
)

PIVOTABLE = {"copy", "active commit"}
SETTLE_SECONDS = 60


def next_step(job: dict[str, object]) -> str:
    where = f"{job['domain']} {job['disk']}"
    if job["ready"] and job["type"] in PIVOTABLE:
        return f"vshx recover {where} --pivot (or --abort); virsh blockjob {where} --pivot"
    return f"wait, or stop it: vshx recover {where} --abort; virsh blockjob {where} --abort"


def cmd_jobs(session: Session, args: Args) -> None:
    conn = session.conn
    doms = [virt.lookup_domain(conn, args.domain)] if args.domain else conn.listAllDomains(0)
    rows: list[dict[str, object]] = []
    for dom in sorted(doms, key=lambda d: d.name()):
        try:
            for job in virt.block_jobs(dom):
                rows.append({**job, "next": next_step(job)})
            entry = journal.read_domain(dom)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                continue  # undefined while we looked
            raise
        if entry is not None:
            disk = str(entry.get("disk", ""))
            rows.append(
                {
                    "domain": dom.name(),
                    "disk": disk,
                    "type": "interrupted vshx",
                    "progress": f"step {entry.get('step')}/{entry.get('steps')}",
                    "ready": False,
                    "next": f"vshx recover {dom.name()} {disk}".rstrip(),
                    "journal": entry.describe(),
                }
            )
    if args.json:
        import json

        session.show(json.dumps(rows, indent=2))
        return
    if not rows:
        session.show("no block jobs and no interrupted vshx operations")
        return
    body = [
        [
            str(r["domain"]),
            str(r["disk"]),
            str(r["type"]),
            f"{r['progress']}%" if isinstance(r["progress"], float) else str(r["progress"]),
            "yes" if r["ready"] else "no",
            str(r["next"]),
        ]
        for r in rows
    ]
    session.show(table(body, ["Domain", "Disk", "Job", "Progress", "Ready", "Next"]))
    for r in rows:
        if "journal" in r:
            session.show(f"{r['domain']}: {r['journal']}")


def _end_job(dom: libvirt.virDomain, disk: str, pivot: bool) -> None:
    """Pivot or abort, and wait until libvirt lists no job (the chain is settled)."""
    flags = libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT if pivot else 0
    dom.blockJobAbort(disk, flags)
    deadline = time.monotonic() + SETTLE_SECONDS
    while virt.block_job_info(dom, disk):
        if time.monotonic() > deadline:
            raise VshxError(
                f"the job on {dom.name()} {disk} is still listed after {SETTLE_SECONDS} s"
            )
        time.sleep(0.1)


def job_step(session: Session, dom: libvirt.virDomain, disk: str, job: dict, args: Args) -> Step:
    entry_pivot = args.intent_pivot
    if args.abort:
        return Step(
            f"abort the {job['type']} job on {disk} (the chain stays as it was)",
            virsh(session.uri, "blockjob", dom.name(), disk, "--abort"),
            action=lambda: _end_job(dom, disk, pivot=False),
        )
    if args.pivot or entry_pivot:
        if job["type"] not in PIVOTABLE:
            raise VshxError(f"a {job['type']} job cannot pivot", "wait for it, or --abort")
        if not job["ready"]:
            raise VshxError(
                f"the {job['type']} job on {dom.name()} {disk} is not ready to pivot yet "
                f"({job['progress']}%)",
                "wait until `vshx jobs` shows Ready yes, or --abort",
            )
        return Step(
            f"pivot {disk} onto the job's result (the {job['type']} was meant to end so)",
            virsh(session.uri, "blockjob", dom.name(), disk, "--pivot"),
            action=lambda: _end_job(dom, disk, pivot=True),
        )
    raise UsageError(
        f"a {job['type']} job runs on {dom.name()} {disk} ({job['progress']}%, "
        f"ready: {'yes' if job['ready'] else 'no'}) and nothing says how it should end",
        "add --pivot (switch the disk to the job's result) or --abort (keep the chain as it was)",
    )


def leak_repair_steps(paths: list[str]) -> list[Step]:
    """An interrupted qemu-img may leave leaked clusters: harmless, and safe to repair."""
    return [
        Step(f"repair leaked clusters in {path}", ["qemu-img", "check", "-q", "-r", "leaks", path])
        for path in paths
    ]


def disk_to_recover(session: Session, name: str) -> str:
    """recover DOMAIN without a disk: the journal's disk, else the one disk with a job, else
    the domain's only disk."""
    dom = virt.lookup_domain(session.conn, name)
    entry = journal.read_domain(dom)
    if entry is not None and entry.get("disk"):
        return str(entry["disk"])
    busy = [str(job["disk"]) for job in virt.block_jobs(dom)]
    disks = [d.target for d in virt.domain_disks(dom) if d.device == "disk"]
    candidates = busy or disks
    if len(candidates) == 1:
        return candidates[0]
    raise UsageError(
        f"which disk of {name!r}?", f"give the disk too; its disks: {', '.join(disks) or 'none'}"
    )


def cmd_recover(session: Session, args: Args) -> None:
    if args.disk is None and not names_an_image(args.domain):
        args["disk"] = disk_to_recover(session, args.domain)
    target = load_target(session, args.domain, args.disk, journal_ok=True)
    entry = journal.read(target)
    args["intent_pivot"] = bool(entry and entry.get("pivot") == "yes")
    chain = target.chain
    plan = Plan(f"recover {chain.domain or chain.active.path} {chain.disk or ''}".rstrip())
    dom = target.dom
    if dom is not None and dom.isActive():
        jobs = [j for j in virt.block_jobs(dom) if j["disk"] == chain.disk]
        if jobs:
            plan.add(job_step(session, dom, chain.disk or "", jobs[0], args))
    elif entry is not None and str(entry.get("what", "")).startswith(("qemu-img", "point")):
        plan.steps += leak_repair_steps([layer.path for layer in chain.layers])
    if entry is not None and dom is not None and not dom.isActive():
        headers = Plan("the chain its headers form", target=target)  # as far as the plan got
        headers.before = headers.after = chain
        plan.steps += definition_steps(session, target, headers)
    if entry is not None:
        plan.notes.append(f"interrupted: {entry.describe()}")
        if dom is not None:
            flags = ["--config"] if dom.isPersistent() else []
            flags += ["--live"] if dom.isActive() else []
            argv = virsh(
                session.uri, "metadata", dom.name(), "--uri", journal.NS, "--remove", *flags
            )
        else:
            argv = ["rm", "-f", "--", journal.state_file(chain.active.path)]
        plan.add(Step("clear vshx's journal", argv, action=lambda: journal.clear(target)))
    if not plan.steps:
        where = f"{chain.domain or chain.active.path} {chain.disk or ''}".rstrip()
        session.nothing_to_do(args, f"no job and no journal on {where}")
        return
    if session.run_plan(plan, args):
        if dom is not None:
            session.info(render_chain(virt.domain_chain(dom, chain.disk or "")))
        session.info("recovered: no job left and no journal")


COMMANDS = [
    Command(
        "jobs",
        "every block job on the host and every interrupted vshx operation, with what to run",
        cmd_jobs,
        (DOMAIN_OPT._replace(required=False, help="only this domain"), JSON),
        group="jobs",
        description="Lists jobs started by vshx or by anyone else (virsh, oVirt, ...), with "
        "type, progress and whether an active commit or copy is ready to pivot.",
    ),
    Command(
        "recover",
        "finish or roll back an interrupted operation (pivot a ready job, or abort it)",
        cmd_recover,
        (
            DOMAIN_OR_IMAGE,
            DISK,
            Opt("pivot", "end a ready active commit or copy by switching to its result"),
            Opt("abort", "end the job, keeping the chain as it was", excludes=("pivot",)),
        ),
        group="jobs",
        changes=True,
        description="Reads the journal vshx keeps in the domain's metadata (or a state file "
        "for a bare image). A job meant to pivot is pivoted once ready; otherwise say "
        "--pivot or --abort. After an interrupted qemu-img step, leaked clusters are "
        "repaired (qemu-img check -r leaks). Then the journal is cleared.",
    ),
]


vshx_register_commands = commands_hook(COMMANDS)
