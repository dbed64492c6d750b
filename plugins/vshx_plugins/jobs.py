"""jobs and recover: what is running or was interrupted, and how to bring it to a clean end.

``jobs`` lists every block job on the host (started by vshx or not), every interrupted vshx
operation (its journal: a domain's metadata, or this user's state files for bare images) and
each qemu-img still at work on such a chain (a ``kill -9`` of vshx leaves its child running),
each with the command that resolves it.  Those qemu-img processes are looked for on the image
host (over ssh on a qemu+ssh:// URI), known by pid and start time.  ``recover`` pivots a READY
active commit that was meant to pivot (or as told), waits for a job the journal says ends by
itself (a commit below the active layer, a pull: as the killed vshx would have; Ctrl-C stops
the waiting, not the job), aborts a job with ``--abort``, repairs
leaked clusters after an interrupted ``qemu-img`` step, finishes or undoes the checkpoint bitmap
steps of an interrupted offline merge (by the chain it finds; refusing when it cannot tell),
deletes the files an interrupted ``--delete`` was still to delete once the merge has completed
and nothing uses them, checks the chain, and clears the journal; never while a qemu-img is at
work on the chain (it refuses with the pid, or waits: ``--wait``).  Its ``--dry-run`` prints the
virsh/qemu-img commands.  A journal written for another domain (a clone made by dumpxml + define
or virt-clone copies the metadata) is listed as a copy and never acted on: recover only clears
it.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

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
    Target,
    UsageError,
    VshxError,
    commands_hook,
    definition_steps,
    image_chain,
    journal,
    libvirt,
    load_target,
    names_an_image,
    procs,
    qemuimg,
    quoted,
    render_chain,
    shell_line,
    table,
    to_json,
    virsh,
    virt,
)
from vshx.api import (
    DOMAIN as DOMAIN_OPT,
)
from vshx.api import (
    files as api_files,
)

PIVOTABLE = {"copy", "active commit"}
ENDS_BY_ITSELF = {"commit", "pull"}  # jobs that complete without a pivot
SETTLE_SECONDS = 60


def next_step(job: dict[str, object]) -> str:
    # each word quoted: a hostile domain or disk name pasted from this hint runs no code
    where = shell_line([str(job["domain"]), str(job["disk"])])
    if job["ready"] and job["type"] in PIVOTABLE:
        return f"vshx recover {where} --pivot (or --abort); virsh blockjob {where} --pivot"
    return f"wait, or stop it: vshx recover {where} --abort; virsh blockjob {where} --abort"


def disk_files(dom: libvirt.virDomain, disk: str) -> list[str]:
    """Every file of a disk's chain, as its definition and its headers name them."""
    try:
        found = virt.find_disk(dom, disk)
    except (VshxError, libvirt.libvirtError):
        return []  # no such disk, or the domain went away while we looked
    if not found.source:
        return []
    files = [found.source, *(path for path, _fmt, _index in found.backing)]
    try:
        files += [str(e.get("filename", "")) for e in qemuimg.info_chain(found.source)]
    except VshxError:
        pass  # a layer missing or unreadable: the definition's names are what we have
    return files


def worker_text(worker: procs.Worker, doing: str = "still runs") -> str:
    """A qemu-img still at work: its pid, when and by whom it was started, its command."""
    when = time.strftime("%H:%M:%S", time.localtime(worker.started))
    by = ""
    if worker.parent is not None and not worker.host:
        gone = "" if os.path.exists(f"/proc/{worker.parent}") else ", which is gone"
        by = f" by vshx pid {worker.parent}{gone}"
    name = os.path.basename(worker.argv[0])
    there = f" on {worker.host}" if worker.host else ""
    return f"{name} pid {worker.pid}{there} (started {when}{by}) {doing}: {shell_line(worker.argv)}"


def wait_first(workers: list[procs.Worker], where: str) -> str:
    """``where``: the words naming the chain, already quoted by :func:`shell_line`."""
    pids = ", ".join(str(w.pid) for w in workers)
    hosts = sorted({w.host for w in workers if w.host})
    there = f" on {', '.join(hosts)}" if hosts else ""
    kill = f"kill {pids} there" if hosts else f"kill {pids}"
    return f"wait until pid {pids}{there} ends (or {kill}), then vshx recover {where}"


def row(
    kind: str,
    where: tuple[str | None, str | None, str | None],
    type: object,
    next: str,
    *,
    progress: float | None = None,
    step: int | None = None,
    steps: int | None = None,
    pid: int | None = None,
    started_by: int | None = None,
    ready: bool = False,
    journal: str | None = None,
) -> dict[str, Any]:
    """One row of ``jobs``, every field present, "none" as None (docs/json/jobs.schema.json).

    ``where`` is (domain, disk, image): a domain's disk target, or a bare image's path;
    ``progress`` (percent) is a block job's, ``step``/``steps`` an interrupted plan's, ``pid``
    a qemu-img's.
    """
    domain, disk, image = where
    return {
        "kind": kind,
        "domain": domain,
        "disk": disk,
        "image": image,
        "type": str(type),
        "progress": progress,
        "step": step,
        "steps": steps,
        "pid": pid,
        "started_by": started_by,
        "ready": ready,
        "next": next,
        "journal": journal,
    }


def count(value: object) -> int | None:
    """A journal's step number (an attribute string in a domain's metadata), or None."""
    try:
        return int(str(value))
    except ValueError:
        return None


def recover_next(entry: journal.Entry, job: dict[str, Any] | None, where: str) -> str:
    """The Next of an interrupted plan whose disk has ``job`` running (None: no job), as
    ``recover`` then decides (cmd_recover, job_step): a job the journal says ends by itself
    is waited for; one meant to pivot is pivoted once ready; any other needs to be told."""
    if job is None:
        return f"vshx recover {where}"
    kind = str(job["type"])
    # a plan over several disks (snapshot-delete) rolls forward waiting for such a job too
    ends = entry.get("completes") is not None or entry.get("resume") is not None
    if ends and kind in ENDS_BY_ITSELF:
        return f"vshx recover {where} (waits until the {kind} job ends by itself, then finishes)"
    if entry.get("pivot") == "yes" and kind in PIVOTABLE:
        if job["ready"]:
            return f"vshx recover {where} (pivots the ready job, as the plan meant)"
        return (
            f"wait until the job is ready (Ready yes), then vshx recover {where} (pivots it); "
            f"or stop it now: vshx recover {where} --abort"
        )
    if kind in PIVOTABLE and job["ready"]:
        return f"vshx recover {where} --pivot, or --abort (the journal does not say which)"
    if kind in PIVOTABLE:
        return (
            f"vshx recover {where} --abort, or once it is ready (Ready yes) vshx recover "
            f"{where} --pivot"
        )
    return (
        f"wait until the {kind} job ends by itself, then vshx recover {where}; or stop it "
        f"now: vshx recover {where} --abort"
    )


def interrupted_rows(
    domain: str | None,
    disk: str | None,
    image: str | None,
    entry: journal.Entry,
    files: list[str],
    job: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """An interrupted vshx operation, and each qemu-img still at work on its chain (a kill -9
    of vshx leaves its qemu-img child writing the chain); ``job``: the block job running on
    its disk, if any."""
    if domain is not None and entry.get("resume"):
        disk = None  # a plan over several disks (snapshot-delete): `recover DOMAIN` rolls it on
    # quoted shell words: the hints below are command lines a user pastes
    where = shell_line([domain, *([disk] if disk else [])] if domain is not None else [str(image)])
    if entry.copied:  # another domain's plan, copied with the definition: nothing to do here
        return [
            row(
                "journal",
                (domain, disk, image),
                "copied vshx journal",
                f"vshx recover {where} (only clears the copy; acts on no file or domain)",
                step=count(entry.get("step")),
                steps=count(entry.get("steps")),
                pid=count(entry.get("pid")),
                journal=entry.describe(),
            )
        ]
    workers = procs.at_work_on(files)
    running = entry.still_running()  # a vshx at work now, not an interrupted one
    elsewhere = entry.elsewhere()
    if running and elsewhere is not None:
        after = (
            f"wait until pid {entry.get('pid')} on {elsewhere} ends; once it has, vshx recover "
            f"{where} (it takes the chain's lock, which that vshx holds while it runs)"
        )
    elif running:
        after = f"wait until pid {entry.get('pid')} ends"
    else:
        after = wait_first(workers, where) if workers else recover_next(entry, job, where)
    rows = [
        row(
            "journal",
            (domain, disk, image),
            "running vshx" if running else "interrupted vshx",
            after,
            step=count(entry.get("step")),
            steps=count(entry.get("steps")),
            pid=count(entry.get("pid")),
            journal=entry.describe(),
        )
    ]
    rows += [
        row(
            "qemu-img",
            (domain, disk, image),
            "qemu-img",
            wait_first([worker], where),
            pid=worker.pid,
            started_by=worker.parent,
            journal=worker_text(worker) + "; " + recover_will(entry),
        )
        for worker in workers
    ]
    return rows


def left_paused(found: dict[str, Any], domain: str) -> None:
    """The row of an interrupted plan whose vshx was killed at its flush step with the domain
    paused (probably its own suspend): say so, and that its user resumes it before recover."""
    name = shell_line([domain])
    found["journal"] = (
        f"{found['journal']}; {domain} was probably left paused by vshx (its flush step "
        f"suspends and resumes it): virsh resume {name} unless you paused it since, then "
        "vshx recover"
    )
    if found["next"].startswith("vshx recover"):
        found["next"] = f"virsh resume {name}, then {found['next']}"


def image_files(image: str) -> list[str]:
    try:
        return [layer.path for layer in image_chain(image).layers]
    except VshxError:
        return [image]


def cmd_jobs(session: Session, args: Args) -> None:
    conn = session.conn
    doms = [virt.lookup_domain(conn, args.domain)] if args.domain else conn.listAllDomains(0)
    rows: list[dict[str, Any]] = []
    for dom in sorted(doms, key=lambda d: d.name()):
        try:
            running = virt.block_jobs(dom)
            for job in running:
                rows.append(
                    row(
                        "block-job",
                        (str(job["domain"]), str(job["disk"]), None),
                        job["type"],
                        next_step(job),
                        progress=float(str(job["progress"])),
                        ready=bool(job["ready"]),
                    )
                )
            entry = journal.read_domain(dom)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                continue  # undefined while we looked
            raise
        if entry is not None:
            disk = str(entry.get("disk", ""))
            files = disk_files(dom, disk) if disk else []
            on_disk = next((j for j in running if disk and j["disk"] == disk), None)
            found = interrupted_rows(dom.name(), disk or None, None, entry, files, on_disk)
            if journal.left_paused(dom, entry):
                left_paused(found[0], dom.name())
            rows += found
    if not args.domain:
        for image, entry in journal.image_journals():
            rows += interrupted_rows(None, None, image, entry, image_files(image))
    if args.json:
        session.show(to_json({"jobs": rows}))
        return
    if not rows:
        session.show("no block jobs and no interrupted vshx operations")
        return
    body = [
        [
            r["domain"] or "-",
            r["disk"] or r["image"] or "",
            str(r["type"]),
            progress_text(r),
            "yes" if r["ready"] else "no",
            str(r["next"]),
        ]
        for r in rows
    ]
    session.show(table(body, ["Domain", "Disk", "Job", "Progress", "Ready", "Next"]))
    for r in rows:
        if r["journal"] is not None:
            session.show(f"{r['domain'] or r['image']}: {r['journal']}")


def progress_text(r: dict[str, Any]) -> str:
    """The Progress column: a block job's percent, an interrupted plan's step, a qemu-img's pid."""
    if r["progress"] is not None:
        return f"{r['progress']}%"
    if r["kind"] == "journal":
        step, steps = ("?" if n is None else n for n in (r["step"], r["steps"]))
        return f"step {step}/{steps}"
    return f"pid {r['pid']}"


def recover_will(entry: journal.Entry) -> str:
    """What ``recover`` does for this journal entry once nothing runs on the chain."""
    if entry.stopped_offline():
        return (
            "once it has ended, recover repairs leaked clusters and clears the journal "
            "(the chain stays as the step leaves it, the guest's data in its top)"
        )
    return "once it has ended, recover clears the journal"


def refuse_while_at_work(session: Session, args: Args, files: list[str], where: str) -> None:
    """recover acts only when no qemu-img is at work on the chain: it waits (--wait) or refuses
    with the pid."""
    workers = procs.at_work_on(files)
    if not workers:
        return
    if args.wait and not session.planning_only(args):
        for worker in workers:
            session.info(f"waiting for {worker_text(worker, 'to end')}")
            wait_gone(worker)
        return
    if args.wait:
        return  # a dry run prints what recover would do once they have ended
    raise VshxError(
        "; ".join(worker_text(worker) for worker in workers),
        f"nothing was changed: {wait_first(workers, where)} (or add --wait)",
    )


def wait_gone(worker: procs.Worker) -> None:
    """Return once that process (the same pid with the same start time) has ended."""
    while procs.still_running(worker):
        time.sleep(0.2)


def _end_job(dom: libvirt.virDomain, disk: str, pivot: bool, wait: bool = True) -> None:
    """Pivot or abort, and wait until libvirt lists no job (the chain is settled); without
    ``wait`` (virsh blockjob --async) only request the abort."""
    flags = libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT if pivot else 0
    if not wait:
        dom.blockJobAbort(disk, flags | libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_ASYNC)
        return
    dom.blockJobAbort(disk, flags)
    deadline = time.monotonic() + SETTLE_SECONDS
    while virt.block_job_info(dom, disk):
        if time.monotonic() > deadline:
            raise VshxError(
                f"the job on {dom.name()} {disk} is still listed after {SETTLE_SECONDS} s"
            )
        time.sleep(0.1)


ABORTED_COMMIT_NOTE = (
    "hint: the aborted {job} had already copied data into its base: the chain stays as it "
    "was and the guest sees the same bytes, but the base keeps what was copied (it is larger "
    "than before, and a reader of the base file alone sees that data). Run the commit again "
    "to finish the merge; nothing else needs doing"
)


def job_step(
    session: Session, dom: libvirt.virDomain, disk: str, job: dict[str, Any], args: Args
) -> Step:
    entry_pivot = args.intent_pivot
    wait = not args.get("async")
    later = [] if wait else ["--async"]
    if args.abort or (args.get("async") and not args.pivot):
        return Step(
            f"abort the {job['type']} job on {disk} (the chain stays as it was)"
            + ("" if wait else "; only requested (--async): it may still be ending"),
            virsh(session.uri, "blockjob", dom.name(), disk, "--abort", *later),
            action=lambda: _end_job(dom, disk, pivot=False, wait=wait),
        )
    if args.pivot or entry_pivot:
        if job["type"] not in PIVOTABLE:
            raise VshxError(
                f"{'an' if job['type'][0] in 'aeiou' else 'a'} {job['type']} job cannot pivot",
                "wait for it, or --abort",
            )
        if not job["ready"]:
            raise VshxError(
                f"the {job['type']} job on {dom.name()} {disk} is not ready to pivot yet "
                f"({job['progress']}%)",
                "wait until `vshx jobs` shows Ready yes, or --abort",
            )
        return Step(
            f"pivot {disk} onto the job's result (the {job['type']} was meant to end so)",
            virsh(session.uri, "blockjob", dom.name(), disk, "--pivot", *later),
            action=lambda: _end_job(dom, disk, pivot=True, wait=wait),
        )
    kind = f"{'an' if job['type'][0] in 'aeiou' else 'a'} {job['type']}"
    pivot = "--pivot (switch the disk to the job's result) or " if job["type"] in PIVOTABLE else ""
    where = shell_line(["vshx", "recover", dom.name(), disk])
    raise VshxError(  # a state of the domain, not a wrong command line: exit 1
        f"{kind} job runs on {dom.name()} {disk} ({job['progress']}%, "
        f"ready: {'yes' if job['ready'] else 'no'}) and nothing says how it should end",
        f"nothing was changed; add {pivot}--abort (keep the chain as it was)"
        + (
            ""
            if pivot
            else f", or wait until it ends by itself (see it with: vshx jobs), then {where}"
        ),
    )


def disk_to_recover(session: Session, name: str) -> str | None:
    """recover DOMAIN without a disk: the journal's disk, else the one disk with a job, else
    the domain's only disk; None when it has several and neither a journal nor a job (nothing
    to recover on any of them)."""
    dom = virt.lookup_domain(session.conn, name)
    entry = journal.read_domain(dom)
    if entry is not None and entry.get("disk"):
        return str(entry["disk"])
    busy = [str(job["disk"]) for job in virt.block_jobs(dom)]
    disks = [d.target for d in virt.domain_disks(dom) if d.device == "disk"]
    candidates = busy or disks
    if len(candidates) == 1:
        return candidates[0]
    if entry is None and not busy and disks:
        return None
    raise UsageError(
        f"which disk of {quoted(name)}?",
        f"give the disk too; its disks: {', '.join(disks) or 'none'}",
    )


def forget_gone_image(session: Session, args: Args, image: str) -> None:
    """An interrupted operation's journal for an image that no longer exists: nothing is left
    to finish or roll back, so recover forgets it (else jobs would list it forever)."""
    place, name = journal.state_place(), journal.state_name(image)
    if place.read(name) is None:
        raise VshxError(f"image {quoted(image)} does not exist", "a path to an image file")
    plan = Plan(f"recover {image}")
    plan.notes.append(f"{image} is gone: only its journal is left")
    argv = ["rm", "-f", "--", journal.state_file(image)]
    plan.add(Step("clear vshx's journal", argv, action=lambda: place.remove(name), here=True))
    session.run_plan(plan, args)


def abort_resumable(
    session: Session, args: Args, dom: libvirt.virDomain, what: str, words: list[str]
) -> None:
    """--abort on an interrupted snapshot-delete: stop the block jobs still running, and keep
    the journal.  A merge that has begun cannot be undone (its base already holds part of the
    overlay's data, so the snapshot's moment is partly overwritten): only rolling forward ends
    the operation, so recover says so instead of pretending to go back."""
    finish = shell_line(["vshx", "recover", dom.name()])
    why = (
        "a merge that has begun cannot be undone: its base already holds part of the merged "
        "data, so the snapshot being deleted no longer shows its moment"
    )
    running = virt.block_jobs(dom) if dom.isActive() else []
    if not running:
        raise VshxError(
            f"{what}: no block job is running, and {why}",
            f"finish it: {finish} (runs {shell_line(['vshx', *words])})",
        )
    plan = Plan(f"stop the block jobs of the interrupted operation on {dom.name()}")
    for job in running:
        plan.add(job_step(session, dom, str(job["disk"]), job, args))
    plan.notes.append(f"the journal stays: {why}; {finish} finishes it")
    if session.run_plan(plan, args):
        session.info(f"stopped; still unfinished: {what}")
        session.info(f"hint: {why}; {finish} finishes it")


def clear_journal_step(session: Session, target: Target) -> Step:
    """The step that clears vshx's journal: a domain's metadata, a bare image's state file."""
    argv = journal.clear_argv(target, session.uri)
    return Step("clear vshx's journal", argv, action=lambda: journal.clear(target), here=True)


def clear_copied(session: Session, args: Args, target: Target, entry: journal.Entry) -> None:
    """recover on a domain whose journal is a copy of another domain's (a clone): the plan it
    names is that domain's, on that domain's files, so nothing of it is run (no roll
    forward, no job step, no repair); only the copy is cleared."""
    dom = target.dom
    assert dom is not None
    plan = Plan(f"recover {dom.name()}")
    plan.notes.append(f"not rolled forward: {entry.describe()}")
    plan.add(clear_journal_step(session, target))
    if session.run_plan(plan, args):
        session.info(
            f"cleared a journal copied from another domain (UUID {entry.get('uuid')}); "
            "nothing else was changed: that domain's own journal, if any, is its own to "
            "recover"
        )


def cmd_recover(session: Session, args: Args) -> int | None:
    if args.disk is None and names_an_image(args.domain) and not api_files.lexists(args.domain):
        forget_gone_image(session, args, args.domain)
        return None
    named_disk = args.disk  # the user's, not the one recover picks below
    if args.disk is None and not names_an_image(args.domain):
        disk = disk_to_recover(session, args.domain)
        if disk is None:
            session.nothing_to_do(args, f"no job and no journal on {args.domain}")
            return None
        args["disk"] = disk
    target = load_target(session, args.domain, args.disk, journal_ok=True)
    entry = journal.read(target)
    args["intent_pivot"] = bool(entry and entry.get("pivot") == "yes")
    chain = target.chain
    dom = target.dom
    where = shell_line([chain.domain or chain.active.path, *([chain.disk] if chain.disk else [])])
    files = [layer.path for layer in chain.layers]
    if dom is not None:
        files += disk_files(dom, chain.disk or "")
    if entry is not None and entry.copied and dom is not None:
        clear_copied(session, args, target, entry)
        return None
    if entry is not None and entry.still_running():
        raise VshxError(
            entry.describe(),
            f"nothing was changed: let it finish (vshx jobs shows it), or stop it (kill "
            f"{entry.get('pid')}) and then run vshx recover {where}",
        )
    refuse_while_at_work(session, args, files, where)
    if entry is not None and dom is not None and entry.get("resume"):
        # a plan over several disks (snapshot-delete) is rolled forward by its own command
        words = list(json.loads(str(entry["resume"])).get("argv", []))
        if len(words) > 1:  # the domain by its name now (renamed since: virsh domrename)
            words[1] = dom.name()
        if words and args.abort:
            abort_resumable(session, args, dom, entry.describe(), words)
            return None
        if words:
            session.info(f"interrupted: {entry.describe()}; rolling it forward")
            if named_disk is not None:  # atk11 F6: it acts beyond the disk named
                session.info(
                    f"that plan spans the domain's disks, not {named_disk} alone: recover "
                    f"rolls it forward on every disk it names, as {shell_line(words)} does"
                )
            if args.keep_files:
                words.append("--keep-files")
            if session.planning_only(args):
                words.append("--dry-run")
            return session.run_words(words)
    plan = Plan(f"recover {where}")
    pivots = False  # recover's own step pivots the job: the merge completes then
    aborts = False  # recover's own step aborts the job: the chain stays as it was
    if dom is not None:  # paused by a vshx killed at its flush step: its user resumes it
        journal.refuse_left_paused(dom, entry)
    if dom is not None and dom.isActive():
        jobs = [j for j in virt.block_jobs(dom) if j["disk"] == chain.disk]
        told = args.abort or args.pivot or args.get("async")
        waits = None  # a job that ends by itself, as the journal says: waited for, as vshx would
        if jobs and entry is not None and not told:
            waits = journal.wait_step(session, target, entry, jobs[0])
        if waits is not None:
            plan.add(waits)
            pivots = True  # the job has ended once that step is done: later steps look again
        elif jobs:
            plan.add(job_step(session, dom, chain.disk or "", jobs[0], args))
            argv = plan.steps[-1].argv
            pivots = "--pivot" in argv and "--async" not in argv  # and waited for
            aborts = "--abort" in argv
            if (args.abort or (args.get("async") and not args.pivot)) and "commit" in str(
                jobs[0]["type"]
            ):
                plan.notes.append(ABORTED_COMMIT_NOTE.format(job=jobs[0]["type"]))
    elif entry is not None and entry.stopped_offline():
        plan.steps += journal.leak_repair_steps(chain.layers)
    if entry is not None and not (dom is not None and dom.isActive()):
        # a safe rebase killed after its header switch: proven, or put back and done again
        plan.steps += journal.rebase_steps(target, entry)
    if entry is not None:  # checkpoint bitmaps left half carried: finished or undone
        plan.steps += journal.bitmap_steps(session, target, entry)
    if entry is not None and dom is not None and not dom.isActive():
        headers = Plan("the chain its headers form", target=target)  # as far as the plan got
        headers.before = headers.after = chain
        plan.steps += definition_steps(session, target, headers)
    if entry is None:  # a --background plan's job, pivoted here or ended by itself: its record
        recorded = journal.record_step(session.uri, target, None, pivots)
        if recorded is not None:
            plan.add(recorded)
    unfinished = None  # an offline data step stopped midway: its command is to be run again
    if entry is not None:
        plan.notes.append(f"interrupted: {entry.describe()}")
        recorded = journal.record_step(session.uri, target, entry, pivots)
        if entry.stopped_offline():
            unfinished = unfinished_note(entry, done=recorded is not None)
        if recorded is not None:  # its job completed after vshx was killed: where the moments are
            plan.add(recorded)
        else:  # not completed: the moments in the files it was writing are not proven
            unproven = journal.unproven_step(session, target, entry)
            if unproven is not None:
                plan.add(unproven)
        # the files a --delete was still to delete, once the merge completed and nothing uses them
        plan.steps += journal.delete_steps(
            session, target, entry, pivots=pivots, aborts=aborts, keep=bool(args.keep_files)
        )
        # the overlays an interrupted revert made and never switched to
        plan.steps += journal.made_steps(session, target, entry)
        plan.add(clear_journal_step(session, target))
    if not plan.steps:
        where = f"{chain.domain or chain.active.path} {chain.disk or ''}".rstrip()
        session.nothing_to_do(args, f"no job and no journal on {where}")
        return None
    if session.run_plan(plan, args):
        if dom is not None:
            session.info(render_chain(virt.domain_chain(dom, chain.disk or "")))
        if args.get("async"):
            session.info("requested (--async): vshx jobs shows when the job has ended")
        else:
            session.info("recovered: no job left and no journal")
        if unfinished is not None:  # nu12 #14: say whether the merge happened
            session.info(unfinished)
        for note in plan.notes:
            if note.startswith("hint: the aborted"):
                session.info(note)
    return None


def unfinished_note(entry: journal.Entry, done: bool) -> str:
    """What recover of an offline plan stopped at a qemu-img or pointer step leaves (nu12 #14,
    atk13 F7): ``done``, the plan's chain reached (its record written, recover did the rest);
    else the chain as its headers name it, the plan not done, and the files it was writing
    may hold part of it."""
    plan = f"{entry.get('plan', 'the interrupted plan')!s}"
    if done:
        return f"finished: {plan} had done its data steps; recover did the rest"
    written = journal.written(entry) or []
    part = (
        f"; {', '.join(os.path.basename(p) for p in written)} may hold part of it"
        if written
        else ""
    )
    return (
        f"not finished: {plan} stopped at its step "
        f"{entry.get('step', '?')} ({entry.get('what', '?')}){part}; the chain is as its "
        "headers name it: run the same vshx command again to finish it (vshx plans it anew)"
    )


COMMANDS = [
    Command(
        "jobs",
        "every block job on the host and every interrupted vshx operation, with what to run",
        cmd_jobs,
        (DOMAIN_OPT._replace(required=False, help="only this domain"), JSON),
        group="jobs",
        description="Lists jobs started by vshx or by anyone else (virsh, oVirt, ...), with "
        "type, progress and whether an active commit or copy is ready to pivot; interrupted "
        "vshx operations (domains, and this user's bare images), and any qemu-img still at "
        "work on their chains (by pid: recover waits for it).",
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
            Opt(
                "keep-files",
                "keep the files an interrupted --delete was still to delete (one that cannot "
                "be deleted: a bind mount over it)",
            ),
            Opt(
                "async",
                "as virsh blockjob --async: request the abort (or --pivot), do not wait for "
                "the job's end",
            ),
            Opt("wait", "first wait for a qemu-img still at work on the chain to end"),
        ),
        group="jobs",
        changes=True,
        predicted=False,  # a roll-forward changes snapshot metadata: later dry-run lines stop
        description="Reads the journal vshx keeps in the domain's metadata (or a state file "
        "for a bare image). A job meant to pivot is pivoted once ready; a job the journal "
        "says ends by itself (a commit below the active layer, a pull) is waited for, as the "
        "interrupted vshx would have (Ctrl-C leaves it running); otherwise say --pivot or "
        "--abort. After an interrupted qemu-img step, leaked clusters are "
        "repaired (qemu-img check -r leaks); a safe rebase killed after its header named the new "
        "backing is proven (the old and the new backing show the image the same data), or put "
        "back and run again; checkpoint bitmaps left half carried are "
        "finished or put back (qemu-img bitmap); the files an interrupted --delete was still "
        "to delete are deleted once the merge has completed and nothing else uses them (rm). "
        "Then the journal is cleared. While a qemu-img "
        "(one a killed vshx left) is still at work on the chain, it refuses with its pid, or "
        "waits for it with --wait.",
    ),
]


vshx_register_commands = commands_hook(COMMANDS)
