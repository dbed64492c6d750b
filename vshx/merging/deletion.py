"""Deleting merged-away files: only those nothing else uses, looked at again before each unlink."""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.merging import preflight
from vshx.merging.savedstate import refuse_internal_snapshots
from vshx.plans import flush, journal, made
from vshx.plans.plan import Step, shell_line
from vshx.storage import host, virt
from vshx.storage.chain import Chain, Layer, human_size
from vshx.storage.identity import FileKey, identity
from vshx.storage.qcow2 import chain_files

if TYPE_CHECKING:
    from vshx.plans.context import Context as Session
    from vshx.plans.target import Target
    from vshx.storage.libvirt_lazy import libvirt


def delete_steps(
    session: Session,
    files: list[Layer],
    keep_users_of: Chain,
    kept: Container[str] = (),
    *,
    refuse_paused: bool = False,
) -> list[Step]:
    """rm steps for merged-away files that nothing else uses (checked now, and again right
    before each unlink), each followed by the rm of its external data file when nothing else
    reaches that (merging/data_files.py; a data file kept is named).  ``kept``: canonical
    paths of files that pass the refusals here but that the caller keeps, with their data
    files.  For recover: ``refuse_paused``, a paused domain is refused rather than its files
    kept (:func:`flushed_first`)."""
    from vshx.merging import data_files

    steps = []
    going = {f.path for f in files}
    index = preflight.UsageIndex(session, keep_users_of, going=going)
    dom = None
    if keep_users_of.domain is not None and files:
        dom = virt.lookup_domain(session.conn, keep_users_of.domain)
    planned: set[FileKey] = {identity(path) for path in going}  # deleted by a step already
    staying: dict[FileKey, str] = {}  # a file kept for its users -> why, for the files below it
    specials: set[str] = set()
    for layer in files:
        refuse_internal_snapshots(layer.path, dom, "vshx would delete that file")
        if layer.canonical in kept:
            continue
        special = not_a_file(layer.path)
        if special:
            session.warn(f"keeping {layer.path}: {special}")
            specials.add(layer.path)
            continue
        users = index.users_of(layer.path, alone=True)
        if users:
            why = f"still used by {'; '.join(users)}"
            session.warn(f"keeping {layer.path}: {why}")
            staying[identity(layer.path)] = why
    # a file kept for its users keeps every file it reads through (as its headers name them)
    below_kept = kept_below(files, staying)
    for layer in files:
        if layer.canonical in kept or layer.path in specials or identity(layer.path) in staying:
            continue
        if layer.path in below_kept:
            session.warn(f"keeping {layer.path}: {below_kept[layer.path]}")
            continue
        data, why = data_files.named_data_file(layer.path)
        if data is not None and data.key in planned:
            data = None  # another of these files, or the data file of one: deleted once
        if data is not None:
            found = data_files.users(session, data, keep_users_of, going, index)
            if found:
                data, why = None, f"still used by {'; '.join(found)}"
        kept_data = ""
        if why:
            named = data_file_name(layer.path)
            kept_data = f"; keeps its external data file {named}: {why}"
            session.warn(f"keeping {named}, the external data file of {layer.path}: {why}")
        step = Step(
            f"delete {layer.name}, out of the chain now ({human_size(layer.allocated)}){kept_data}",
            ["rm", "-f", "--", layer.path],
            action=_delete_after_looking_again(session, keep_users_of, layer, going),
        )
        step.removes = layer.path
        steps.append(step)
        if data is not None:
            planned.add(data.key)
            steps.append(data_files.delete_step(session, data, keep_users_of, going))
    return flushed_first(session, dom, steps, refuse_paused=refuse_paused)


def made_steps(session: Session, target: Target, entry: journal.Entry) -> list[Step]:
    """For ``recover``: the rm steps of the files an interrupted plan made and never switched
    to (snapshot-revert's new overlays, killed before its definition step): each still the
    very file vshx recorded making (vshx.plans.made), named by no definition or snapshot of
    the domain, and read by nothing else the usage scan finds, now and again right before its
    unlink.  Every other such file that is there is kept, with a warning that says why."""
    dom = target.dom
    paths = journal.creations(entry)
    if dom is None or not paths or entry.copied:
        return []
    removable, kept = made.leftovers(dom, paths)
    for note in kept:
        session.warn(note)
    steps = []
    for record in removable:

        def users(path: str = record.path) -> list[str]:
            return preflight.other_users(session, path, target.chain)

        found = users()
        if found:
            session.warn(
                f"keeping {record.path}, which the interrupted plan made: used by "
                f"{'; '.join(found)}"
            )
            continue
        step = made.removal_step(dom, record, users)
        said = f"deleted {record.path}: the interrupted plan made it, and nothing used it"
        steps.append(_said(session, step, said))
    return steps


def _said(session: Session, step: Step, said: str) -> Step:
    """``step``, saying ``said`` once its action has run (a deletion is never silent)."""
    action = step.action

    def and_say() -> None:
        if action is not None:
            action()
        session.info(said)

    step.action = and_say
    return step


def recover_steps(
    session: Session,
    target: Target,
    entry: journal.Entry,
    *,
    pivots: bool,
    aborts: bool,
    keep: bool = False,
) -> list[Step]:
    """For ``recover``: the rm steps an interrupted plan (a ``--delete``) had still to run, for
    the files its journal lists that are still there.  Fail closed: a file is deleted only
    once the merge that left it unused has completed (it is out of the disk's chain now, or
    once recover's own step pivots: each rm looks at the chain again right before its
    unlink) and the same usage scan and refusals as the plan's own rm steps find no user
    (:func:`delete_steps`); every other file is kept, with a warning that says why.  An
    entry of an older vshx, which kept no such list: nothing is deleted, and a warning says
    so.  ``pivots``: recover's job step pivots the job and waits for it; ``aborts``: it
    aborts the job (the files stay in the chain); ``keep``: the user keeps them (recover
    --keep-files: a file that cannot be deleted, a bind mount over it), each named.  A paused
    domain is refused (VshxError: nothing was changed), its journal kept."""
    if entry.copied or entry.get("resume"):
        return []  # another domain's plan; a plan over several disks reruns its own command
    chain = target.chain
    where = shell_line([chain.domain or chain.active.path, *([chain.disk] if chain.disk else [])])
    paths = journal.deletions(entry)
    if paths is None:
        older = "its list cannot be read" if "delete" in entry else "an older vshx kept none"
        session.warn(
            f"the journal does not say which files the interrupted plan was to delete ({older}): "
            "recover deletes none, so the files a --delete was to remove stay; see them with "
            f"vshx chain {where}"
            + (
                f" and vshx snapshot-cleanup {shell_line([chain.domain])} --delete-files"
                if chain.domain
                else ""
            )
        )
        return []
    present = [path for path in dict.fromkeys(paths) if host.lexists(path)]
    if not present:
        return []
    if aborts or keep:
        kept = (
            "the interrupted merge is aborted, so the chain still reads it"
            if aborts
            else "--keep-files (remove it yourself once nothing uses it)"
        )
        for path in present:
            session.warn(f"keeping {path}: {kept}")
        return []
    if not pivots:  # the merge completed only if the chain no longer holds them
        layers = {identity(layer.path) for layer in chain.layers}
        for path in [p for p in present if identity(p) in layers]:
            session.warn(
                f"keeping {path}: it is still in the chain of {where}: the interrupted merge "
                "has not completed"
            )
            present.remove(path)
    dom = virt.lookup_domain(session.conn, chain.domain) if chain.domain else None
    going: list[Layer] = []
    for path in present:
        try:
            refuse_internal_snapshots(path, dom, "vshx would delete that file")
            allocated = host.stat(path, follow=False).st_blocks * 512
        except (VshxError, OSError) as exc:
            why = exc.message if isinstance(exc, VshxError) else exc.strerror
            session.warn(f"keeping {path}: {why}")
            continue
        going.append(Layer(path, "", -1, allocated=allocated))
    try:
        return delete_steps(session, going, chain, refuse_paused=True)
    except flush.PausedError:
        raise
    except VshxError as exc:  # the usage scan cannot read something: nothing is deleted
        for layer in going:
            session.warn(f"keeping {layer.path}: {exc.message}")
        return []


def flushed_first(
    session: Session,
    dom: libvirt.virDomain | None,
    steps: list[Step],
    *,
    refuse_paused: bool = False,
) -> list[Step]:
    """The rm steps of files ``dom``'s chain read, marked for the plan's flush step
    (vshx.plans.flush: suspend and resume the running domain right before the first).  A
    domain not running but not shut off (paused) cannot be made to write its caches down:
    its files are kept, and a warning says why (fail closed); with ``refuse_paused`` (recover:
    a journal keeps the files to delete) the plan is refused instead."""
    if dom is None or not steps:
        return steps
    why = flush.not_flushable(dom)
    if why and refuse_paused:
        raise flush.refuse_paused(dom, [step.argv[-1] for step in steps])
    if why:
        names = ", ".join(step.argv[-1] for step in steps)
        session.warn(
            f"keeping {names}: {why}, and QEMU may still hold in its cache the only record "
            f"that the merged data is in the chain; delete them (rm) only once {dom.name()} "
            "has been resumed and paused again (virsh resume, virsh suspend: pausing writes "
            "the cache down) or shut off"
        )
        return []
    for step in steps:
        step.flush = dom.name()
    return steps


def kept_below(files: list[Layer], staying: dict[FileKey, str]) -> dict[str, str]:
    """The paths of ``files`` that a kept file reads through, each with why it stays:
    "ABOVE, kept (WHY), reads through it" (a kept file needs its whole backing chain)."""
    found: dict[str, str] = {}
    keys = {identity(layer.path): layer.path for layer in files}
    for layer in files:
        if identity(layer.path) not in staying:
            continue
        for below in chain_files(layer.path)[1:]:
            path = keys.get(identity(below))
            if path is not None and identity(path) not in staying and path not in found:
                found[path] = (
                    f"{layer.path}, kept ({staying[identity(layer.path)]}), reads through it"
                )
    return found


def not_a_file(path: str) -> str:
    """Why ``path`` is no file vshx may delete, or "": only regular files are removed.  A
    block device's node (an LVM volume, a loop device) is its storage's, not a layer's file:
    `rm` would take the name away from a device that stays (virsh blockcommit --delete also
    leaves it)."""
    import stat as modes

    from vshx.storage import host as files

    try:
        mode = files.stat(path, follow=False).st_mode
    except FileNotFoundError:
        return ""  # gone already: as rm -f
    except OSError as exc:
        return f"it cannot be looked at ({exc.strerror})"
    if modes.S_ISREG(mode):
        return ""
    if modes.S_ISBLK(mode):
        return "a block device (vshx deletes only files; free the device yourself)"
    if modes.S_ISLNK(mode):
        return "a symbolic link (vshx deletes only files; remove the link and its file yourself)"
    return "not a regular file (vshx deletes only files)"


def data_file_name(layer: str) -> str:
    """The data file a layer's header names, as written there (for messages)."""
    from vshx.storage.qcow2 import header_names

    names = header_names(layer)
    return (names[1] if names else None) or "?"


def _delete_after_looking_again(
    session: Session, chain: Chain, layer: Layer, going: set[str]
) -> Callable[[], None]:
    """The rm runs only if, read again right before the unlink (under the chain's lock, which
    the command took when it loaded the chain), no disk of the domain and no other domain,
    image or pool volume uses the file, and the path still names the file that was checked."""

    planned = identity(layer.path)

    def action() -> None:
        from vshx.storage import host as files

        if not files.lexists(layer.path):
            return  # gone already: as rm -f
        special = not_a_file(layer.path)
        if special:
            raise VshxError(
                f"not deleting {layer.path}: {special}", "nothing was deleted", clean=True
            )
        if chain.domain is not None:
            from vshx.storage.definition import named_files
            from vshx.storage.snapshots import current_chain_files

            dom = virt.lookup_domain(session.conn, chain.domain)
            refuse_internal_snapshots(layer.path, dom, "vshx would delete that file")
            # every disk, read again: its headers, and what its definitions name
            if layer.canonical in current_chain_files(dom) | named_files(dom):
                raise VshxError(
                    f"not deleting {layer.path}: a disk or definition of {chain.domain} still "
                    "names it",
                    f"see: {shell_line(['vshx', 'chain', chain.domain])}",
                    clean=True,
                )
        else:
            refuse_internal_snapshots(layer.path, None, "vshx would delete that file")
        index = preflight.UsageIndex(session, chain, going=going)
        users = index.users_of(layer.path, alone=True)
        if users or identity(layer.path) != planned:
            why = f"still used by {'; '.join(users)}" if users else "another file is there now"
            raise VshxError(
                f"not deleting {layer.path}: {why}",
                f"nothing was deleted; look at it ({index.scanned()})",
                clean=True,
            )
        session.info(f"deleting {layer.path}, out of the chain now")
        try:
            files.unlink(layer.path)
        except FileNotFoundError:
            pass
        except OSError as exc:  # a bind mount over it (EBUSY), a read-only file system
            where = [chain.domain or chain.active.path, *([chain.disk] if chain.disk else [])]
            recover = shell_line(["vshx", "recover", *where])
            raise VshxError(
                f"cannot delete {layer.path}: {exc.strerror}",
                f"the merge itself is done; {recover} deletes what is left once the file can "
                f"go, or `{recover} --keep-files` keeps those files and clears the journal",
            ) from None

    return action


def memory_users(session: Session, dom: libvirt.virDomain, path: str, going: set[str]) -> list[str]:
    """Everything but the snapshots in ``going`` that names the memory file ``path``: this
    domain's other snapshots and managed save, any domain's disk chains, other domains'
    snapshots and managed saves, pool volumes and images (native virsh keeps memory files)."""
    from vshx.storage.snapshot_refs import managed_save_path, snapshot_files

    ours = Chain([Layer(path, "", 0)], dom.name(), None)
    users = preflight.UsageIndex(session, ours, going=set()).users_of(path)
    key = identity(path)
    for handle in dom.listAllSnapshots(0):
        if handle.getName() in going:
            continue
        for what, named in snapshot_files(handle.getXMLDesc(0)):
            if identity(named) == key:
                users.append(f"domain {dom.name()} snapshot {handle.getName()} ({what})")
    saved = managed_save_path(session.uri, dom.name())
    if saved and dom.hasManagedSaveImage(0) and identity(saved) == key:
        users.append(f"domain {dom.name()} managed-save image")
    return users


def memory_steps(
    session: Session, dom: libvirt.virDomain, gone: list[tuple[str, str | None]]
) -> tuple[list[Step], list[str]]:
    """rm steps for the deleted snapshots' memory files that nothing else names, looked at
    again right before each unlink; and a note for each file kept, saying who names it."""
    from vshx.storage import host as files

    going = {name for name, _path in gone}
    steps: list[Step] = []
    notes: list[str] = []
    for name, path in gone:
        if not path or not files.exists(path):
            continue
        users = memory_users(session, dom, path, going)
        if users:
            notes.append(
                f"keeping snapshot {name}'s memory state {path}: still named by {'; '.join(users)}"
            )
            continue

        def action(path: str = path) -> None:
            if not files.lexists(path):
                return
            again = memory_users(session, dom, path, going)
            if again:
                raise VshxError(
                    f"not deleting {path}: still named by {'; '.join(again)}",
                    "nothing was deleted; the snapshot metadata steps before it ran: "
                    f"see {shell_line(['vshx', 'snapshot-list', dom.name()])}",
                    clean=True,
                )
            files.unlink(path)

        size = human_size(files.stat(path).st_size)
        steps.append(
            Step(
                f"remove snapshot {name}'s memory state ({size}; nothing else names it)",
                ["rm", "-f", "--", path],
                action=action,
            )
        )
    return steps, notes
