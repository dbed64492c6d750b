"""Loading what a merge command works on (a plans/target.py Target), under its chain lock."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from vshx.errors import UsageError, VshxError
from vshx.merging import preflight
from vshx.merging.preflight import read_host_ahead
from vshx.plans import overlap
from vshx.plans.journal import read_definition_ahead
from vshx.plans.plan import shell_line
from vshx.plans.target import Target, prediction_key
from vshx.spec.render import quoted
from vshx.storage import host as files
from vshx.storage import virt
from vshx.storage.chain import Chain, canonical, image_chain, is_json_name
from vshx.storage.libvirt_lazy import libvirt
from vshx.storage.moments import read_snapshots_ahead
from vshx.storage.paths import names_an_image

if TYPE_CHECKING:
    from vshx.plans.context import Context as Session
    from vshx.storage.identity import FileKey


def load_target(
    session: Session,
    domain_or_image: str,
    disk: str | None,
    *,
    journal_ok: bool = False,
    image: bool = False,
    scan: bool = False,
    again: int = 0,
) -> Target:
    """Resolve DOMAIN DISK (or a bare IMAGE) to its chain; a bare image may not be in use.

    A command that will change the chain (not ``--dry-run``) first takes the chain's lock
    (plans/lock.py: its active layer's, then every layer's below it, as the headers name
    them) and only then reads the chain and the journal, so two vshx never plan on one chain
    at once, whichever of its files each names, and every check below runs under the lock.
    A file the read finds that the first look did not (a chain changed in between) is locked
    then and the chain read again (``again``: how often so far).  An interrupted earlier
    operation on it is refused (``recover`` passes ``journal_ok``).  ``image``: the word is an
    image path whatever it looks like (rebase IMAGE).  ``scan``: the plan will ask who else
    uses its files (``check_merge`` with ``changes_view_of``): the libvirt reads of that scan
    start as soon as the lock is held, on a thread, while the chain is read and checked.
    """
    image = image or (disk is None and names_an_image(domain_or_image))
    if disk is None and not image:
        # no such domain: said first (atk12 F5); a word left out is a usage error (exit 2)
        named = virt.lookup_domain(session.conn, domain_or_image)
        disks = [d.target for d in virt.domain_disks(named) if d.device == "disk"]
        raise UsageError(
            f"which disk of {quoted(domain_or_image)}?",
            f"give the disk too, e.g. {shell_line([domain_or_image, disks[0] if disks else 'vda'])}"
            f"; its disks: {', '.join(disks) or 'none'}",
        )
    dom = None if image else virt.lookup_domain(session.conn, domain_or_image)
    locked = None
    if dom is not None and _will_change(session):
        overlap.claim_domain(dom.name())  # a batch line still working on it finishes first
    if _will_change(session):
        seen = None if dom is None else dom.XMLDesc(0)  # which files to lock: read again below
        active = domain_or_image if dom is None else virt.find_disk(dom, disk or "", seen).source
        if dom is not None:
            lock_domain(session, dom, seen)
        if active and files.exists(active):
            locked = _lock(session, active)
            _lock_layers(session, active, None)
    ahead = snapshots = definition = None
    if scan and locked is not None:
        ahead = read_host_ahead(session)
    if dom is not None and locked is not None and not journal_ok:  # every merge plan reads them
        snapshots = read_snapshots_ahead(dom)
        definition = read_definition_ahead(dom)
    if dom is None:
        target = Target(chain_of_image(session, domain_or_image))
    else:
        xml = dom.XMLDesc(0)  # the chain, the journal and the record of moments: one read
        try:  # recover brings a definition left behind by an interrupted plan in line itself
            chain = chain_of_disk(session, dom, disk or "", definition=not journal_ok, xml=xml)
            target = Target(chain, dom)
        except VshxError:  # an interrupted plan explains a definition left behind: say that
            chain = chain_of_disk(session, dom, disk or "", definition=False, xml=xml)
            interrupted = Target(chain, dom)
            interrupted.xml = xml
            refuse_interrupted(interrupted)
            raise
        target.xml = xml
    if not journal_ok:
        refuse_json_layers(session, target.chain)
    if _will_change(session):
        from vshx.storage.identity import identity

        if locked is None:  # the source named no file vshx could see before the chain read
            locked = _lock(session, target.chain.active.path)
        if identity(target.chain.active.path) != locked:
            raise VshxError(
                f"the chain of {domain_or_image} changed while vshx was taking its lock",
                "another program changed it; look at it (vshx chain) and run the command again",
            )
        if _lock_layers(session, target.chain.active.path, target.chain):
            if again >= 2:
                raise VshxError(
                    f"the chain of {domain_or_image} keeps changing while vshx takes its lock",
                    "another program is changing it; look at it (vshx chain) and run the "
                    "command again",
                )
            return load_target(  # a layer the first look did not see: read it under its lock
                session,
                domain_or_image,
                disk,
                journal_ok=journal_ok,
                image=image,
                scan=scan,
                again=again + 1,
            )
        if overlap.current() is not None and overlap.claim_files(_files_of(target.chain)):
            # it waited for an earlier batch line working on some of these files: read again
            return load_target(
                session, domain_or_image, disk, journal_ok=journal_ok, image=image, scan=scan
            )
    if definition is not None:
        target.share_definition(definition)
    if not journal_ok:
        refuse_interrupted(target)
    target.ahead = ahead
    if snapshots is not None:
        target.share_snapshots(snapshots)
    return target


def load_past_active(
    session: Session, dom: libvirt.virDomain, disk: str
) -> tuple[Target, str] | None:
    """A shut-off disk whose active layer cannot be read (missing, a damaged header), loaded
    as ``load_target`` loads a disk, from the layers below that one, with why that layer
    cannot be read; None when it can be read, or when the layers below it are not proven to
    be the chain its definition names (virt.chain_past_active: ``load_target`` then says why).

    For a plan that does not read that layer and leaves it as it is (snapshot-revert puts a
    new overlay on a moment file below it).  A changing run locks the layers below it (and
    the layer itself where the file is there), then reads the chain again under the locks:
    one that changed meanwhile is refused.  An interrupted earlier operation on the disk is
    refused, as ``load_target`` refuses it."""
    first = virt.chain_past_active(dom, disk)
    if not isinstance(first, virt.PastActive):
        return None
    chain = first.chain
    below = Chain(chain.layers[1:], dom.name(), chain.disk)
    if _will_change(session):
        overlap.claim_domain(dom.name())
        if files.exists(chain.active.path):
            _lock(session, chain.active.path)
        _lock(session, below.active.path)
        _lock_layers(session, below.active.path, below)
    xml = dom.XMLDesc(0)
    again = virt.chain_past_active(dom, disk, xml)
    if not isinstance(again, virt.PastActive) or [
        layer.canonical for layer in again.chain.layers
    ] != [layer.canonical for layer in chain.layers]:
        raise VshxError(
            f"the chain of {dom.name()} {disk} changed while vshx was taking its lock",
            "another program changed it; look at it (vshx chain) and run the command again",
        )
    probe = Target(Chain(again.chain.layers[1:], dom.name(), again.chain.disk), dom)
    probe.xml = xml
    refuse_interrupted(probe)
    target = Target(again.chain, dom)
    target.xml = xml
    return target, again.why


def load_domain_form(
    session: Session,
    target: Target,
    form: Callable[[str, str, bool], list[str]],
    *,
    any_layer: bool = False,
    shared_bare: bool = False,
    scan: bool = False,
) -> tuple[Target, str] | None:
    """A bare IMAGE a changing command (commit, shorten, pull, flatten, rebase) names, against
    the domains whose disk chains hold it.  None: no domain's disk chain holds it (or a running
    domain's: the running refusal every bare plan makes names it), and the bare plan stands.
    The owning disk's Target (loaded as ``load_target`` loads it: locked, journal checked) and
    the plan note that says so: exactly one shut-off domain's disk holds it, as its active
    layer (any layer: ``any_layer``), so the domain form (``form(domain, disk, active)``, the
    command words) is the same command.  Otherwise VshxError naming the domain forms, except
    that ``shared_bare`` gives None for an image several disks hold (commit: its bare plan
    refuses writing under saved RAM, and its usage scan other readers of what it changes).

    Why: the bare plan would change that domain's chain without the domain form's checks (its
    snapshots' moments and saved RAM, the chain its persistent definition pins), so a memory
    snapshot's moment could be overwritten and later merges refused (definition disagrees)."""
    if target.dom is not None:
        return None
    image = target.chain.active.path
    holders = preflight.domain_users(session, image, ahead=target.ahead)
    holders.sort(key=lambda holder: (holder[0].name(), holder[1]))  # the message's order
    if not holders or any(virt.is_running(dom) for dom, _disk in holders):
        return None
    if shared_bare and len(holders) > 1:  # whose snapshots and definition would it follow?
        return None
    dom, disk = holders[0]
    layer = None
    if len(holders) == 1:
        owned = load_target(session, dom.name(), disk, scan=scan)
        layer = owned.chain.layer_of_file(image)
        if owned.live:  # started since it was asked: a running domain's layer
            raise VshxError(
                f"{image} is in use by running domain {dom.name()} {disk}",
                "name the domain and disk instead of the image; nothing was changed",
            )
        if layer is not None and (any_layer or layer.position == 0):
            same = as_named(form(dom.name(), disk, layer.position == 0), target.chain, owned.chain)
            note = (
                f"{layer.name} is a layer ({owned.chain.ref_of(layer)}) of disk {disk} of "
                f"shut-off domain {dom.name()}: planned as {shell_line(same)}, which also "
                "accounts for its snapshots' moments and saved RAM and keeps its definition "
                "naming the chain"
            )
            return owned, note
    where = ", ".join(f"domain {d.name()} {t}" for d, t in holders)
    which = "the disk" if layer is not None and layer.position == 0 else "a layer of the disk"
    ways = [shell_line(form(d.name(), t, which == "the disk")) for d, t in holders]
    raise VshxError(
        f"{image} is {which} chain of {where}: as a bare image this would change that chain "
        "without the domain's checks (its snapshots' moments, saved RAM, the chain its "
        "definition names)",
        f"name the domain and disk instead: {' or '.join(ways)}; nothing was changed",
    )


LAYER_OPTIONS = ("--top", "--base", "--drop", "--backing")


def as_named(words: list[str], bare: Chain, owned: Chain) -> list[str]:
    """A domain form's words with each layer the bare chain names (after ``--top``,
    ``--base``, ``--drop``, ``--backing``) named as the domain's chain names that file: a
    hard link or another name of a layer is no layer of the disk's chain, and the form must
    be a command that runs."""
    unique = len({layer.name for layer in owned.layers}) == len(owned.layers)
    named = list(words)
    for i in range(1, len(named)):
        if named[i - 1] not in LAYER_OPTIONS:
            continue
        layer = next((lay for lay in bare.layers if named[i] in (lay.name, lay.path)), None)
        found = owned.layer_of_file(layer.path) if layer is not None else None
        if found is not None:
            named[i] = found.name if unique else found.path
    return named


def _files_of(chain: Chain) -> set[FileKey]:
    """Every file the chain's data is in, by identity (what a batch line claims)."""
    from vshx.storage.identity import identity
    from vshx.storage.qcow2 import chain_files

    paths = {layer.path for layer in chain.layers} | set(chain_files(chain.active.path))
    return {identity(path) for path in paths}


def lock_domain(session: Session, dom: libvirt.virDomain, xml: str | None = None) -> None:
    """Take the locks that make this vshx the one changing ``dom`` (plans/lock.py
    ``take_domain``: every disk's active layer) before any of its chains is read; ``xml``:
    its ``XMLDesc(0)`` when the caller has just read it."""
    from vshx.plans import lock
    from vshx.storage.chain import disks_from_xml

    seen = dom.XMLDesc(0) if xml is None else xml
    disks = [
        (disk.target, disk.source)
        for disk in disks_from_xml(seen, f"domain {dom.name()}")
        if disk.device == "disk" and disk.source and disk.kind in ("file", "block")
    ]
    lock.take_domain(disks, dom.name(), _command_line(session))


def _lock(session: Session, active: str) -> FileKey:
    from vshx.plans import lock

    return lock.take(active, _command_line(session))


def _lock_layers(session: Session, active: str, chain: Chain | None) -> bool:
    """Lock every file below the active layer (plans/lock.py ``take_layers``): before the
    chain is read, the files its headers name (a header that cannot be read is left to the
    read, which says why); after it, the layers of the chain read and the files their
    headers name.  True when that took a lock this process did not hold before."""
    from vshx.plans import lock
    from vshx.storage.qcow2 import chain_files

    try:
        paths = chain_files(active)
    except VshxError:  # the read says why (before), or read it (after)
        paths = []
    if chain is not None:
        paths = list(dict.fromkeys([*(layer.path for layer in chain.layers), *paths]))
    return lock.take_layers(active, paths, _command_line(session))


def refuse_json_layers(session: Session, chain: Chain) -> None:
    """Refuse a change to a chain with a ``json:`` layer (a node QEMU builds from options,
    e.g. a raw slice of a file: ``offset``/``size``): vshx's checks, steps and definitions
    name files, and no file name represents such a layer exactly (nothing is changed).
    ``rebase`` alone goes on: it rewrites the header of an image above it, whose old view
    qemu-img reads through the header's own name, and writes the backing name given."""
    command = session.command
    if command is not None and command.name == "rebase":
        return
    found = next((layer for layer in chain.layers if is_json_name(layer.path)), None)
    if found is None:
        return
    above = chain.above(found)
    where = f" (the backing name of {above.path})" if above is not None else ""
    raise VshxError(
        f"{chain.ref_of(found)} of this chain is a json: name, not a file{where}: "
        f"{found.path}; vshx cannot represent it as one file, so it changes nothing in this "
        "chain",
        "nothing was changed; take the image above it off that name first, e.g. "
        "vshx rebase IMAGE --backing FILE (qemu-img reads the old view through the json: "
        "name), or copy the chain: qemu-img convert -O qcow2 IMAGE NEW.qcow2",
    )


def _will_change(session: Session) -> bool:
    """A real run (a dry run prints only); on a remote URI the lock is taken on that host."""
    args = session.args
    dry_run = session.dry_run or bool(args is not None and args.get("dry_run"))
    return not dry_run


def _command_line(session: Session) -> str:
    """What this vshx is doing, for the message of a vshx that finds the chain locked."""
    import shlex

    words = getattr(session, "words", None)
    return shlex.join(["vshx", *words]) if words else shlex.join(["vshx", *sys.argv[1:]])


def chain_of_disk(
    session: Session,
    dom: libvirt.virDomain,
    disk: str,
    *,
    definition: bool = True,
    xml: str | None = None,
) -> Chain:
    """The disk's chain: as it is, or as the earlier lines of a batch --dry-run leave it;
    ``definition``: refuse one whose definition names other files (virt.domain_chain);
    ``xml``: the domain's XMLDesc(0), read just now."""
    if session.planning_ahead and session.predicted:
        key = prediction_key(Chain([], dom.name(), virt.find_disk(dom, disk).target))
        predicted = session.predicted.get(key)
        if predicted is not None:
            return predicted
    return virt.domain_chain(dom, disk, definition=definition, xml=xml)


def chain_of_image(session: Session, path: str) -> Chain:
    """A bare image's chain, or its predicted one in a batch --dry-run."""
    if session.planning_ahead and session.predicted:
        predicted = session.predicted.get(canonical(path))
        if predicted is not None:
            return predicted
    return image_chain(path)


def refuse_interrupted(target: Target) -> None:
    """Nothing new starts on a disk or image whose last operation did not finish."""
    from vshx.plans import journal

    entry = journal.read(target)
    if entry is None:
        _refuse_interrupted_layer(target)
        return
    name = target.chain.domain or target.chain.active.path
    disk = str(entry.get("disk") or "")
    where = [target.chain.domain, *([disk] if disk else [])] if target.dom else [name]
    jobs = shell_line(["vshx", "jobs", *([target.chain.domain] if target.chain.domain else [])])
    if entry.still_running():  # not interrupted: at work right now
        raise VshxError(
            f"{entry.describe()} on {name}",
            f"wait until it has finished (see it with: {jobs}), then run the command again",
        )
    raise VshxError(
        f"an earlier vshx operation on {name} did not finish: {entry.describe()}",
        f"see it with: {jobs}; resolve it with: {shell_line(['vshx', 'recover', *where])}",
    )


def _refuse_interrupted_layer(target: Target) -> None:
    """An interrupted (or running) vshx on a bare image whose chain shares a file with this one
    (``pull top.qcow2`` killed, then ``commit mid.qcow2``): its journal is keyed by the image it
    named, which may be another layer of this chain or an image above it, or this very image
    under another name (a hard link, a bind mount, a symlink: the journal's key is the path it
    was named by, so ``journal.read`` finds only that one).  Matched by file identity."""
    from vshx.plans import journal
    from vshx.storage.identity import identity
    from vshx.storage.qcow2 import chain_files

    entries = [(image, e) for image, e in journal.image_journals() if files.lexists(image)]
    if not entries:
        return
    ours = {identity(layer.path) for layer in target.chain.layers}
    active = identity(target.chain.active.path)
    for image, entry in entries:
        named = identity(image)
        try:
            theirs = {named} | {identity(f) for f in chain_files(image) if files.lexists(f)}
        except VshxError:
            theirs = {named}  # its chain unreadable now (jobs and recover say why): the image
        if not ours & theirs:
            continue
        shares = (
            f"the same file as {target.chain.active.path}"
            if named == active
            else "whose chain shares files with this one"
        )
        if entry.still_running():
            raise VshxError(
                f"{entry.describe()} on {image}, {shares}",
                "wait until it has finished (see it with: vshx jobs), then run the command again",
            )
        raise VshxError(
            f"an earlier vshx operation on {image}, {shares}, did not finish: {entry.describe()}",
            f"see it with: vshx jobs; resolve it with: vshx recover {shell_line([image])}; "
            "nothing was changed",
        )


def refuse_unfinished(dom: libvirt.virDomain) -> None:
    """Snapshot metadata is not changed while an operation on any of the domain's disks is
    running or was interrupted (its plan still names the snapshots it works on)."""
    from vshx.plans import journal

    entry = journal.read_domain(dom)
    if entry is not None:
        raise VshxError(
            f"{entry.describe()}; vshx does not change {dom.name()}'s snapshot metadata meanwhile",
            f"wait for it, or resolve it first: {shell_line(['vshx', 'recover', dom.name()])}; "
            "nothing was changed",
        )
