"""Running a Plan: plugins' last word, then print it (--dry-run) or execute its Steps.

The same Plan object is what plugins inspect, what ``--dry-run`` prints and what runs, so no
hook, no printout and no execution can disagree about what happens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.plans import flush, journal, ledger, overlap, state_checks
from vshx.plans.checkpoint_guard import refuse_offline_redefine
from vshx.plans.plan import comment, printable, shell_line
from vshx.plans.secret_guard import refuse_encrypted_offline
from vshx.plans.target import prediction_key
from vshx.storage import host as files
from vshx.storage.moments import stamp
from vshx.storage.qemuimg import NoSpace

if TYPE_CHECKING:
    from vshx.plans.context import Context as Session
    from vshx.plans.plan import Plan
    from vshx.plans.target import Target
    from vshx.spec.spec import Args
    from vshx.storage.chain import Chain, Layer

# said in a --dry-run script of a plan that records its verdicts (plans/ledger.py) when vshx runs it
UNRECORDED_NOTE = (
    "run by sh, this script writes no record of where the snapshots' moments went (vshx "
    "writes one into {domain}'s metadata when it runs the plan): afterwards vshx shows a "
    "snapshot it keeps as unknown where its moment is in a file its metadata does not name "
    "(only that record proves it), and merges or cleans up none of those"
)


def look_again(target: Target, number: int) -> None:
    """An offline plan goes on only while its domain is still shut off.

    A domain started between two qemu-img steps runs on the chain as it then is; switching
    its definition or rewriting its layers under it would lose the guest's writes.
    """
    if target.dom is not None and not target.live and target.dom.isActive():
        raise VshxError(
            f"{target.chain.domain} was started while the offline plan ran: stopped before "
            f"step {number}",
            f"the running domain uses its disk as it was left after step {number - 1}, which "
            "shows the guest the same data; nothing was deleted. See: "
            f"{shell_line(['vshx', 'chain', *chain_words(target.chain)])}, "
            f"{shell_line(['vshx', 'recover', *chain_words(target.chain)])}",
        )


def chain_words(chain: Chain) -> list[str]:
    """The words naming ``chain`` on a vshx command line: DOMAIN [DISK], or the image's path
    (each quoted later by :func:`shell_line`, so a hostile name cannot run as code)."""
    if chain.domain:
        return [chain.domain, *([chain.disk] if chain.disk else [])]
    return [chain.active.path]


def recover_hint(target: Target, exc: NoSpace) -> str:
    """Where a plan that ran out of space stands, and the way on (its journal stays)."""
    chain = target.chain
    recover = printable(shell_line(["vshx", "recover", *chain_words(chain)]))
    return (
        f"{exc.state}. Free space {exc.place}, then run `{recover}` (repairs leaked "
        "clusters, clears the journal) and the command again"
    )


def remember_deletes(session: Session, plan: Plan) -> None:
    """Note the files this plan's ``rm -f -- FILE`` steps delete (printed or run), by
    identity, so that its printed rm line pasted back may remove a raw layer it merged away."""
    from vshx.storage.identity import identity

    for step in plan.steps:
        argv = step.argv
        if step.here or len(argv) != 4 or argv[:3] != ["rm", "-f", "--"]:
            continue  # vshx's own state files (here) are no pasted rm's business
        try:
            if files.lexists(argv[3]):
                session.deletes_planned.add(identity(argv[3]))
        except VshxError:
            continue  # not to be looked at: its pasted rm will be refused


def libvirt_failure(
    exc: Exception, plan: Plan, number: int, changed: bool, journaled: bool
) -> VshxError | None:
    """A libvirt error a step raised, saying what ran before it; None for any other error."""
    import sys

    from vshx.errors import libvirt_hint

    libvirt = sys.modules.get("libvirt")
    if libvirt is None or not isinstance(exc, libvirt.libvirtError):
        return None
    message = exc.get_error_message() or str(exc)
    if not changed:
        return VshxError(message, libvirt_hint(libvirt, exc))
    return after_changes(plan, number, message, journaled)


def after_changes(plan: Plan, number: int, message: str, journaled: bool) -> VshxError:
    """Step ``number`` failed after earlier steps changed things: say so, and the way on."""
    target = plan.target
    chain = target.chain if target is not None else None
    where = chain_words(chain) if chain is not None and (chain.domain or chain.active.path) else []
    step = plan.steps[number - 1]
    way = (
        f"the journal keeps the plan: vshx jobs shows it, "
        f"`{printable(shell_line(['vshx', 'recover', *where]))}` "
        "finishes it once the cause is fixed"
        if journaled and where
        else "see: vshx jobs, vshx chain DOMAIN DISK"
    )
    return VshxError(
        f"step {number}/{len(plan.steps)} ({step.description}) failed: {message}",
        f"steps 1-{number - 1} ran and changed the chain, the definition or the snapshots "
        f"before it; vshx stopped there. {way}",
    )


def run_plan(session: Session, plan: Plan, args: Args) -> bool:
    """Print the plan (--dry-run) or execute its steps; True when the steps ran.

    Plugins see it first: ``vshx_preflight`` for plans on a disk or image, then
    ``vshx_plan_ready``; either may refuse by raising VshxError, before anything changed.
    """
    host = session.host
    flush.insert(session, plan)  # before the hooks: they see the steps that run
    state_checks.insert(session, plan)  # the shut-off domain, the commit's readers: for sh -e
    if plan.target is not None:
        host.preflight(session, plan.target, plan)
    if session.command is not None:
        host.plan_ready(session, session.command, args, plan)
    refuse_offline_redefine(session, plan)
    refuse_encrypted_offline(plan)
    refuse_unrecordable(plan)
    remember_deletes(session, plan)
    if session.planning_only(args):
        if session.plan_json:
            from vshx.plans.plan_json import plan_document  # only --plan-json pays for it

            command = session.command.name if session.command is not None else None
            session.out.write(plan_document(plan, command) + "\n")
        else:
            if plan.target is not None and plan.target.dom is not None and plan.verdicts:
                plan.notes.append(UNRECORDED_NOTE.format(domain=plan.target.dom.name()))
            session.write_script(plan.script(explain=session.teaching(args)))
        if session.planning_ahead and plan.target is not None and plan.after is not None:
            session.predicted[prediction_key(plan.target.chain)] = plan.after
            if plan.target.dom is not None and plan.verdicts is not None:  # what it records
                merged = ledger.merged(plan.target, plan.verdicts, stamp())
                session.predicted_records[plan.target.dom.name()] = merged
        return False
    teach = session.teaching(args)
    if plan.method:
        session.info(f"{plan.title}: {plan.method}")
    if teach:
        for line in plan.prediction():
            session.print(line)
    target = plan.target
    # a live commit's other layers, timed before its job: what an abort may vouch for
    views = ledger.commit_view_times(target, plan.writes) if target is not None else {}
    journaled = False  # a check changes nothing: no journal entry to write or clear
    changed = False  # a changing step completed: a plan over several disks is half done then
    began = False  # a changing step started
    for number, step in enumerate(plan.steps, 1):
        if teach:
            session.print(comment(step.description))
            for line in step.underneath:
                session.print(comment(f"  {line}"))
            session.print(step.equivalent())
            session.out.flush()
        if step.changes and not began:
            overlap.before_change()  # in a batch: an earlier line failed meanwhile, or Ctrl-C
            began = True
        if target is not None:
            look_again(target, number)
            # the flush step changes nothing but pauses the domain: journaled too, so that
            # jobs and recover tell the pause a vshx killed there leaves (plans/flush.py)
            if step.changes or step.flush_step:
                with overlap.parked():  # libvirt saves the definition: the next line works
                    journal.write(target, plan, number)
                journaled = True
        files.forget()  # look again: nothing read before this step is taken for granted
        try:
            step.run()
        except NoSpace as exc:
            if target is None or not journaled:
                raise
            raise VshxError(exc.message, recover_hint(target, exc)) from None
        except VshxError as exc:
            # a plan recover rolls forward, stopped after a change (or a step that wrote part
            # of its data): its journal stays, and recover finishes it
            resumable = bool(plan.intent.get("resume"))
            half_done = resumable and (changed or exc.partial)
            if exc.partial and not resumable and target is not None and views:
                keep_views_above(target, plan.writes[0], views)
            if target is not None and exc.clean and journaled and not half_done:
                journal.clear(target)  # the step left things as they were: nothing to recover
            if changed and ((exc.hint or "").startswith("libvirt's error") or exc.clean):
                # refused by libvirt, or a step that changed nothing itself (a name taken since
                # the plan) after earlier ones did: never "nothing was changed"
                kept = journaled and (half_done or not exc.clean)
                raise after_changes(plan, number, exc.message, kept) from None
            if half_done and target is not None and journaled and exc.partial:
                where = [target.chain.domain or target.chain.active.path]
                recover = printable(shell_line(["vshx", "recover", *where]))
                raise VshxError(
                    exc.message,
                    f"a merge that has begun cannot be undone; its journal stays: `{recover}` "
                    "finishes it (nothing was deleted yet)",
                ) from None
            raise
        except Exception as exc:
            failed = libvirt_failure(exc, plan, number, changed, journaled)
            if failed is None:
                raise
            raise failed from None
        changed = changed or step.changes
    if target is not None:
        refresh_metadata_flags(target)
    with overlap.parked():  # libvirt saves the definition twice: the next line works meanwhile
        if target is not None and target.dom is not None and plan.verdicts is not None:
            now = ledger.record(target, ledger.pending(target, plan))
            ledger.remember_running(target, plan, now)  # --background: its job still runs
        if target is not None and journaled:
            journal.clear(target)
    return True


def keep_views_above(target: Target, write: tuple[Layer, Layer], before: dict[str, int]) -> None:
    """A commit's job aborted after it wrote into its base: record that the moments at and
    above its top are still theirs (ledger.record_aborted_commit).  A record libvirt refuses
    to write leaves them unknown, the fail-closed answer, and the error stays the job's."""
    from vshx.storage.libvirt_lazy import libvirt

    try:
        ledger.record_aborted_commit(target, *write, before)
    except (libvirt.libvirtError, VshxError):
        pass


def refresh_metadata_flags(target: Target) -> None:
    """An offline plan whose step started the domain (snapshot-revert --running): libvirt
    copied the metadata written into the persistent definition only (journal, record) into the
    live one too, so the record is written and the journal cleared where the domain keeps
    them now (else a later command reads the old live copy)."""
    from vshx.storage.libvirt_lazy import libvirt

    flags = target.journal_flags
    if target.dom is None or target.live or flags is None:
        return
    if not flags & libvirt.VIR_DOMAIN_AFFECT_LIVE and target.dom.isActive():
        target.journal_flags = None  # journal.clear asks libvirt where it is now


def refuse_unrecordable(plan: Plan) -> None:
    """A plan whose journal or record of moments would name a file whose name is not UTF-8
    as text is refused before anything ran: libvirt's metadata holds UTF-8 only, and a name
    written otherwise would name another file when read back."""
    found = journal.unrecordable(plan)
    if found is not None:
        domain, path = found
        raise VshxError(
            f"cannot record this plan in the metadata of domain {domain}: libvirt keeps "
            f"UTF-8 text only, and the name of {printable(path)} is not UTF-8",
            "give that file a UTF-8 name (then qemu-img rebase -u -b NEWNAME the image above "
            "it), and run it again",
        )
