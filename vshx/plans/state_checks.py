"""Checks of the state a plan was made on, as steps, so that a printed script stops too.

A real run plans on the host as it is and runs at once; a ``--dry-run`` script may run later,
on a host that changed.  vshx's own checks of an offline plan (the domain is shut off) and of a
commit (no file outside the chain reads through the file it writes into) are made before the
plan is built; these steps print them for ``sh -e`` (and run them again on a real run, just
before the plan's first step), as merging/checks.py prints the free-space checks.
"""

from __future__ import annotations

import os
import stat as modes
from collections.abc import Callable
from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.plans.flush import pasted_running
from vshx.plans.journal import is_delete
from vshx.plans.plan import Step, shell_line, virsh
from vshx.storage import host as files
from vshx.storage import virt
from vshx.storage.chain import is_json_name

if TYPE_CHECKING:
    from vshx.plans.context import Context as Session
    from vshx.plans.plan import Plan
    from vshx.storage.libvirt_lazy import libvirt


# a domain is shut off: its UUID among those virsh lists as shut off (UUIDs, not the state's
# name, which virsh translates, nor the domain's name, which may hold a line break); no line
# (the domain is gone, virsh fails) stops sh -e as well: the pipeline's status is grep's.  A
# domain without saved RAM when the plan was made must still have none (a managed save pins
# its chain: vshx refuses to change it, and a merge would leave the RAM unrestorable)
SHUT_OFF_LIST = ["list", "--all", "--state-shutoff", "--uuid"]
UNSAVED = "--without-managed-save"
SHUT_OFF_GREP = ["grep", "-qxF", "--"]
# the persistent definition as virsh prints it, blank lines left out (virsh ends the XML with
# one of its own), hashed; vshx hashes libvirt's XML the same way (definition_lines)
DEFINITION_READ = ["dumpxml", "--inactive"]
DEFINITION_TAIL = ["|", "grep", "-v", "^$", "|", "sha256sum", "|", *SHUT_OFF_GREP]


def shut_off_step(uri: str, dom: libvirt.virDomain, saved: bool | None = None) -> Step:
    """Stop unless ``dom`` is still shut off (and still without saved RAM, when it had none):
    every step of an offline plan assumes it (a definition switched, a layer rewritten or a
    snapshot made current under a running guest loses what it writes from then on).
    ``saved``: a pasted check line's word on saved RAM; else whether it has some now."""
    name, uuid = dom.name(), dom.UUIDString()
    saved = bool(dom.hasManagedSaveImage(0)) if saved is None else saved
    listed = SHUT_OFF_LIST if saved else [*SHUT_OFF_LIST[:3], UNSAVED, SHUT_OFF_LIST[3]]
    argv = virsh(uri, *listed)

    def action() -> None:
        if dom.isActive():
            raise VshxError(
                f"{name} is running: this plan's steps are for the domain shut off",
                f"nothing was changed; shut it down ({shell_line(['virsh', 'shutdown', name])}), "
                "then run the command again (vshx plans it anew)",
                clean=True,
            )
        if not saved and dom.hasManagedSaveImage(0):
            raise VshxError(
                f"{name} has saved RAM now (a managed save): this plan was made without it, "
                "and the saved state needs its chain as it is",
                f"nothing was changed; start {name} (it resumes from the saved RAM) and shut it "
                "down, then run the command again (vshx plans it anew)",
                clean=True,
            )

    return Step(
        f"check: {name} is still shut off (else vshx refuses)",
        argv,
        action=action,
        changes=False,
        shell=f"{shell_line(argv)} | {shell_line([*SHUT_OFF_GREP, uuid])}",
    )


def definition_lines(xml: str) -> bytes:
    """``xml`` as ``grep -v '^$'`` prints virsh's ``dumpxml`` of it: every line that is not
    empty, each ended by a newline."""
    return b"".join(line + b"\n" for line in xml.encode().split(b"\n") if line)


# the domain's checkpoints by name, sorted bytewise (an offline merge carries each one's bitmap
# into the layer it writes: a checkpoint made since the plan would lose its bitmap)
CHECKPOINTS_READ = ["checkpoint-list", "--name"]
CHECKPOINTS_TAIL = ["|", "LC_ALL=C", "sort", *DEFINITION_TAIL]
# the domain's snapshots by name, read the same way: a snapshot made since the plan (its new
# overlay, or an internal snapshot in a layer the plan deletes) is one the plan never judged
SNAPSHOTS_READ = ["snapshot-list", "--name"]  # printed as `snapshot-list UUID --name`


def sorted_names(list_all: Callable[[], list[str]]) -> bytes:
    """The names ``list_all()`` gives as ``virsh ...-list --name | LC_ALL=C sort | grep -v
    '^$'`` prints them; none where the driver keeps no such objects (virsh then prints none)."""
    from vshx.storage.libvirt_lazy import libvirt

    try:
        names = list_all()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise
        names = []
    lines = sorted(line for name in names for line in name.encode().split(b"\n") if line)
    return b"".join(line + b"\n" for line in lines)


def checkpoint_lines(dom: libvirt.virDomain) -> bytes:
    """``dom``'s checkpoint names as ``virsh checkpoint-list --name`` sorted prints them."""
    return sorted_names(lambda: [c.getName() for c in dom.listAllCheckpoints(0)])


def snapshot_lines(dom: libvirt.virDomain) -> bytes:
    """``dom``'s snapshot names as ``virsh snapshot-list --name`` sorted prints them."""
    return sorted_names(lambda: [s.getName() for s in dom.listAllSnapshots(0)])


def digest_check(
    description: str,
    argv: list[str],
    read: Callable[[], bytes],
    filters: list[list[str]],
    refusal: tuple[str, str],
    expected: str = "",
    seen: bytes | None = None,
) -> Step:
    """A check that what ``read`` gives is what it gave when the plan was made; printed as
    ``ARGV | FILTER... | sha256sum | grep -qxF -- 'DIGEST  -'`` (the digest made only when
    printed).  ``expected``: a pasted check line's ``sha256sum`` line; else ``seen``, what
    the plan read itself, or ``read()`` now."""
    if seen is None:
        seen = b"" if expected else read()

    def action() -> None:
        now = read()
        if (sha256sum_line(now) != expected) if expected else (now != seen):
            raise VshxError(*refusal, clean=True)

    def shell() -> str:
        piped = " | ".join(shell_line(words) for words in [argv, *filters])
        digest = expected or sha256sum_line(seen)
        return f"{piped} | sha256sum | {shell_line([*SHUT_OFF_GREP, digest])}"

    return Step(description, argv, action=action, changes=False, shell=shell)


def checkpoints_step(uri: str, dom: libvirt.virDomain, expected: str = "") -> Step:
    """Stop unless ``dom`` has the checkpoints the plan was made on: the plan carries the
    bitmaps of those it saw, and one made since would be left without its bitmap.
    ``expected``: a pasted check line's ``sha256sum`` line; else the checkpoints now."""
    name = dom.name()
    return digest_check(
        f"check: {name} has the checkpoints this plan was made on (else vshx refuses)",
        virsh(uri, *CHECKPOINTS_READ, dom.UUIDString()),
        lambda: checkpoint_lines(dom),
        [CHECKPOINTS_TAIL[1:3], DEFINITION_TAIL[1:4]],
        (
            f"the checkpoints of {name} changed since this plan was made",
            "nothing was changed; run the command again (vshx plans it anew: it carries "
            "every checkpoint's bitmap)",
        ),
        expected,
    )


def snapshots_step(
    uri: str, dom: libvirt.virDomain, expected: str = "", judged: list[str] | None = None
) -> Step:
    """Stop unless ``dom`` has the snapshots the plan was made on: one made since (a new
    overlay, an internal snapshot in a layer the plan deletes) is one the plan never judged,
    and its moment may read through what the plan changes or deletes.
    ``expected``: a pasted check line's ``sha256sum`` line; ``judged``: the names of the
    snapshots the plan read (Target.snapshots); else the snapshots now."""
    name = dom.name()
    return digest_check(
        f"check: {name} has the snapshots this plan was made on (else vshx refuses)",
        virsh(uri, SNAPSHOTS_READ[0], dom.UUIDString(), SNAPSHOTS_READ[1]),
        lambda: snapshot_lines(dom),
        [CHECKPOINTS_TAIL[1:3], DEFINITION_TAIL[1:4]],
        (
            f"the snapshots of {name} changed since this plan was made",
            "nothing was changed; run the command again (vshx plans it anew on every "
            "snapshot's moment)",
        ),
        expected,
        None if judged is None else sorted_names(lambda: judged),
    )


def definition_step(uri: str, dom: libvirt.virDomain, expected: str = "") -> Step:
    """Stop unless ``dom``'s persistent definition is the one the plan was made on: a disk
    pointed at another file since (a snapshot made meanwhile, an edit) would be switched back
    by the plan's own definition step, and the guest would lose what it wrote there.
    ``expected``: a pasted check line's ``sha256sum`` line; else the definition now."""
    from vshx.storage.libvirt_lazy import libvirt

    name = dom.name()
    return digest_check(
        f"check: the definition of {name} is the one this plan was made on (else vshx refuses)",
        virsh(uri, *DEFINITION_READ, dom.UUIDString()),
        lambda: definition_lines(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)),
        [DEFINITION_TAIL[1:4]],
        (
            f"the definition of {name} changed since this plan was made",
            "nothing was changed; run the command again (vshx plans it anew on the "
            "definition as it is)",
        ),
        expected,
    )


# the disk images in directories that may read through another file (a new reader of a file
# is one): the regular files whose first three bytes are those of qcow or qcow2 ("QFI"), QED
# ("QED"), a VMDK sparse extent ("KDM") or a VMDK descriptor ("# D"), as qemu-img opens them
# (atk13 F1: a QED overlay was not seen), their names NUL-ended, sorted bytewise and hashed;
# the same bytes as vshx hashes them (listing), whatever bytes a name holds.  A file sh cannot
# read is left out, as vshx leaves it out (its look at users refuses it itself)
IMAGE_STARTS = (b"QFI", b"QED", b"KDM", b"# D")
IMAGE_PICK = (
    'for f; do case "$(head -c 3 -- "$f")" in QFI|QED|KDM|"# D") printf "%s\\0" "$f";; '
    "esac; done; true"
)
FIND_NAMES = ["-mindepth", "1", "-maxdepth", "1", "-type", "f", "-exec", "sh", "-c"]
FIND_TAIL = [IMAGE_PICK, "sh", "{}", "+"]
SORT_NAMES = ["LC_ALL=C", "sort", "-z"]


def _is_image(path: str) -> bool:
    """A regular file (not followed through a link) whose first three bytes are one of
    ``IMAGE_STARTS``, as the printed ``head -c 3`` compares them."""
    try:
        return modes.S_ISREG(files.stat(path, follow=False).st_mode) and (
            files.read(path, 3) in IMAGE_STARTS
        )
    except OSError:
        return False


def image_names(directories: list[str]) -> bytes:
    """The disk images in ``directories`` (absolute, resolved) as the printed ``find DIR...
    | LC_ALL=C sort -z`` lists them: their names NUL-ended, sorted bytewise."""
    names = sorted(
        os.fsencode(path)
        for directory in directories
        for name in files.current().listdir(directory)
        if _is_image(path := os.path.join(directory, name))
    )
    return b"".join(name + b"\0" for name in names)


def sha256sum_line(names: bytes) -> str:
    """``sha256sum``'s line for ``names`` read from stdin (hashlib is imported here: only a
    plan that is printed, or a pasted check line, needs the digest)."""
    import hashlib

    return f"{hashlib.sha256(names).hexdigest()}  -"


def listing_step(directories: list[str], written: str, expected: str = "") -> Step:
    """Stop unless the directories of the chain hold the very files they held when vshx
    judged who reads through ``written`` (the file a commit writes into): a new image there
    (a clone on it, another domain's disk) may read through it.  sh sees only these
    directories; the real run looks at every user again (``listing_note`` says so).
    ``expected``: a pasted check line's ``sha256sum`` line; else the listing now."""
    dirs = sorted(set(directories))
    seen = b"" if expected else image_names(dirs)
    argv = ["find", *dirs, *FIND_NAMES, *FIND_TAIL]

    def digest() -> str:
        return expected or sha256sum_line(seen)

    def action() -> None:
        try:
            names = image_names(dirs)
        except OSError as exc:
            raise VshxError(
                f"cannot list {exc.filename}: {exc.strerror}",
                "nothing was changed; vshx refuses what it cannot check",
                clean=True,
            ) from None
        if (sha256sum_line(names) != expected) if expected else (names != seen):
            raise VshxError(
                f"the disk images in {', '.join(dirs)} changed since this plan was made: a "
                f"new one there may read through {written}",
                "nothing was changed; run the command again (vshx plans it anew)",
                clean=True,
            )

    where = ", ".join(os.path.basename(d) or d for d in dirs)
    return Step(
        f"check: the disk images in {where} are those vshx saw (a new one may read through "
        f"{os.path.basename(written)}; else vshx looks again)",
        argv,
        action=action,
        changes=False,
        shell=lambda: (
            f"{shell_line(argv)} | {shell_line(SORT_NAMES)} | sha256sum | "
            f"{shell_line([*SHUT_OFF_GREP, digest()])}"
        ),
    )


def listing_note(written: str, command: str, deleting: bool = False) -> str:
    """What a printed script re-checks of the users of ``written`` before the commit (of the
    files it deletes, ``deleting``)."""
    before = "before it deletes files" if deleting else f"before writing into {written}"
    return (
        f"{before} this script re-checks only that the chain's directories hold the same "
        "disk images that may read through another file (qcow, qcow2, QED, VMDK; by name): a "
        "new reader of it elsewhere (another domain's disk, a pool volume, an image in another "
        "directory or reached through a link) or an image there rebased onto it since is not "
        f"seen by sh; {command} itself looks at every user again (run it rather than this "
        "script when the host may have changed)"
    )


def _written_by_commit(step: Step) -> str | None:
    """The file a commit step writes into (its base), "" when the step names none (QEMU's
    default: the layer below the top), None for any other step."""
    argv = step.argv
    if argv[:2] == ["qemu-img", "commit"]:
        return argv[argv.index("-b") + 1] if "-b" in argv[:-1] else ""
    if argv[:1] == ["virsh"] and "blockcommit" in argv[:4]:
        return argv[argv.index("--base") + 1] if "--base" in argv[:-1] else ""
    return None


def insert(session: Session, plan: Plan) -> None:
    """Put the state checks first in the plan (once): that its shut-off domain is still shut
    off; that the domain's persistent definition, its checkpoints (offline) and its snapshots
    are those the plan was made on; and, before a commit or a deletion, that the directories
    hold the files vshx saw when it judged who reads through the file written or deleted."""
    target = plan.target
    dom = target.dom if target is not None else plan.domain
    if (target is None and dom is None) or any(step.state_check for step in plan.steps):
        return
    found: list[Step] = []
    ahead = session.planning_ahead and bool(session.predicted)  # earlier lines change things
    # a gathered batch script (atk12 F3): a later line's checks run at the script's top, on
    # the host as vshx planned every line on it, before any line changes it; elsewhere (the
    # REPL) its lines are printed one by one and sh re-checks nothing for the later ones
    hoisting = ahead and session.hoisted is not None
    state: list[Step] = []  # the definition, the checkpoints, the snapshots
    if dom is not None:
        live = target.live if target is not None else bool(dom.isActive())
        if not live:
            found.append(shut_off_step(session.uri, dom))
        if ahead and not hoisting:
            plan.notes.append(
                "an earlier line of this script changes things: sh does not re-check that "
                f"the definition and the snapshots of {dom.name()} are those this line was "
                "planned on"
            )
        else:
            # a transient domain's definition is its live XML; whether it has one was read
            # under the chain's lock (Target.persistent), where the plan read it
            persistent = target.persistent() if target is not None else None
            if not live or (dom.isPersistent() if persistent is None else persistent):
                state.append(definition_step(session.uri, dom))
            if not live:
                state.append(checkpoints_step(session.uri, dom))
            # the snapshots this line judged are predicted ones when hoisted: the top of the
            # script checks those there are now
            judged = None if ahead or target is None else [s.name for s in target.snapshots()]
            state.append(snapshots_step(session.uri, dom, judged=judged))
    written = next((w for s in plan.steps if (w := _written_by_commit(s)) is not None), None)
    deleted = [step.argv[-1] for step in plan.steps if is_delete(step.argv)]
    if written is not None or deleted:
        name = (written or "the base") if written is not None else "the files it deletes"
        command = f"`vshx {session.command.name}`" if session.command is not None else "vshx"
        if ahead and not hoisting:
            plan.notes.append(
                f"an earlier line of this script changes files: sh does not re-check who reads "
                f"through {name}; {command} itself does"
            )
        else:
            chains = [] if target is None else [target.chain]
            chains += [before for before, _after in plan.chains]
            directories = {
                os.path.dirname(layer.canonical)
                for chain in chains
                for layer in chain.layers
                if not is_json_name(layer.path) and not layer.canonical.startswith("/dev/")
            }
            real = [files.realpath(path) for path in deleted]
            directories |= {os.path.dirname(path) for path in real if not path.startswith("/dev/")}
            if directories:
                state.append(listing_step(sorted(directories), name))
                plan.notes.append(listing_note(name, command, deleting=written is None))
    if hoisting and state:
        session.hoist(state)
        plan.notes.append(
            "an earlier line of this script changes things: this line's checks of the host "
            "run at the top of the script, before any line changes anything"
        )
    else:
        found += state
    for step in found:
        step.state_check = True
    plan.steps[0:0] = found


def pasted_shut_off(session: Session, rest: list[str]) -> Step | None:
    """A plan's shut-off, definition, checkpoints, snapshots or runs-or-shut-off (before a
    flush: plans/flush.py) check line, pasted back (its words after ``virsh -c URI``): the
    same check of the domain of that UUID; None for any other line."""
    tail = ["|", *SHUT_OFF_GREP]
    listed = rest[:4] == SHUT_OFF_LIST[:3] + [UNSAVED] and rest[4:5] == SHUT_OFF_LIST[3:]
    if listed and len(rest) == 10 and rest[5:9] == tail:
        return shut_off_step(session.uri, virt.lookup_domain(session.conn, rest[9]), False)
    if rest[:4] == SHUT_OFF_LIST and len(rest) == 9 and rest[4:8] == tail:
        return shut_off_step(session.uri, virt.lookup_domain(session.conn, rest[8]), True)
    if rest[:2] == CHECKPOINTS_READ and len(rest) == 4 + len(CHECKPOINTS_TAIL):
        if rest[3:-1] == CHECKPOINTS_TAIL:
            dom = virt.lookup_domain(session.conn, rest[2])
            return checkpoints_step(session.uri, dom, rest[-1])
    if rest[::2][:2] == SNAPSHOTS_READ and len(rest) == 4 + len(CHECKPOINTS_TAIL):
        if rest[3:-1] == CHECKPOINTS_TAIL:
            dom = virt.lookup_domain(session.conn, rest[1])
            return snapshots_step(session.uri, dom, rest[-1])
    if rest[:2] == DEFINITION_READ and len(rest) == 4 + len(DEFINITION_TAIL):
        if rest[3:-1] == DEFINITION_TAIL:
            dom = virt.lookup_domain(session.conn, rest[2])
            return definition_step(session.uri, dom, rest[-1])
    return pasted_running(session.uri, session.conn, rest)


def pasted_listing(words: list[str]) -> Step | None:
    """The listing check line, pasted back: the same check; None for any other line."""
    tail = [*FIND_NAMES, *FIND_TAIL, "|", *SORT_NAMES, "|", "sha256sum", "|", *SHUT_OFF_GREP]
    if len(words) < 2 + len(tail) or words[0] != "find" or words[-len(tail) - 1 : -1] != tail:
        return None
    dirs = words[1 : -len(tail) - 1]
    if not all(os.path.isabs(d) for d in dirs):
        return None
    return listing_step(dirs, "the file the commit writes into", words[-1])
