"""A changing ``qemu-img`` line typed or pasted into vshx (commit, rebase, snapshot, ...): it
runs as typed, but only after the checks vshx's own commands make on the files it writes
(which files those are, shell/readonly.py reads from its words)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.merging import preflight, verify
from vshx.merging.savedstate import refuse_saved_ram
from vshx.plans.plan import printable, shell_line
from vshx.storage import host as files
from vshx.storage.bitmaps import checkpoints_by_bitmap
from vshx.storage.chain import Chain, Layer, as_opened, canonical, image_chain
from vshx.storage.identity import identity
from vshx.storage.libvirt_lazy import libvirt
from vshx.storage.moments import read_snapshots
from vshx.storage.qcow2 import chain_files

if TYPE_CHECKING:
    from collections.abc import Mapping

    from vshx.plans.context import Context as Session


def check_qemu_img_write(
    session: Session,
    argv: list[str],
    verb: str,
    writes: list[str],
    views: list[tuple[str, str | None]],
    commit_top: str | None = None,
    pointer: tuple[str, str, str] | None = None,
) -> None:
    """A changing ``qemu-img`` line typed or pasted into vshx: before it runs, the checks
    vshx's own commands make on the files it writes, or VshxError (nothing ran).

    ``writes``: the files it writes, read from its words (shell/readonly.py
    ``qemu_img_writes``); ``views``: those whose content as the images above them see it
    changes, each with the layer a chain may reach it through unchanged (a commit's top);
    ``commit_top``: a commit without -b, which writes into that file's backing file.  Each
    existing file it writes: its chain's lock taken (a real run), no running domain's disk
    chain holds it (that domain's own command does the job, or it is shut off first), and
    where the line changes what the images above a file show (a commit into its base,
    snapshot -a, --shrink, a create, convert or dd over it) no chain other than the one it
    goes through uses it (preflight.refuse_shared, as commit does).  ``pointer``: a
    ``rebase -u`` (image, new backing, its -F format): run only once vshx proved that the old
    and the new backing show the image the same data, as its own ``rebase -u`` does.  Under
    --dry-run the same checks run, without the lock."""
    line = shell_line(argv)
    written, views = list(writes), list(views)
    if verb == "commit" and commit_top is None and views and views[0][1]:
        given, top = views[0][0], views[0][1]  # -b BASE: the layer of TOP's chain it names
        named = _commit_base(top, given, line)
        written = [named if path == given else path for path in written]
        views = [(named, top)]
    if commit_top is not None:
        below = _backing_of(commit_top)
        if below is not None:
            written.append(below)
            views.append((below, commit_top))
    written = [path for path in dict.fromkeys(written) if files.lexists(path)]
    if not written:
        return
    for path in written:
        _refuse_running(session, path, verb, line)
    # the domain disks using each written file, read once for the checks below
    shown = [path for path, _through in views if files.lexists(path)]
    users = preflight.domains_using(session, list(dict.fromkeys([*written, *shown])))
    # a shut-off domain's saved RAM (a memory snapshot's moment, a managed save) goes with
    # what its chain shows: vshx's domain commands refuse to change that, and so does this line
    refuse_saved_ram(session, written, f"`{line}`", users)
    if pointer is not None:
        _refuse_unproven_pointer(line, *pointer)
    if verb == "bitmap" and len(argv) > 3 and argv[-2] in written:
        _refuse_checkpoint_bitmap(argv, line, users[argv[-2]])
    if not session.dry_run:
        from vshx.plans import lock

        for path in written:
            lock.take(path, shell_line(["vshx", *argv]))
    if verb == "commit":
        _warn_lost_moments(session, views, line, users)
    for path, through in views:
        if not files.lexists(path):
            continue
        ours = _chain_of(through or path)
        doing = "committing into" if verb == "commit" else f"qemu-img {verb} on"
        try:
            preflight.refuse_shared(session, path, ours, False, doing, through=through)
        except VshxError as exc:  # --force is vshx's own commands' word, not qemu-img's
            instead = "vshx commit --force" if verb == "commit" else "sh to run the line"
            hint = (exc.hint or "").replace("use --force", f"use {instead}")
            raise VshxError(exc.message, f"nothing was changed; {hint}") from exc


def _refuse_unproven_pointer(line: str, image: str, backing: str, fmt: str) -> None:
    """``qemu-img rebase -u -F FMT -b BACKING IMAGE`` rewrites the pointer only: refused unless
    the old and the new backing show IMAGE the same data wherever IMAGE does not hold its own
    (merging/verify.py, the proof of vshx's own ``rebase -u``); a format other than the file's
    is another view too.  Lines qemu-img refuses itself (a backing without -F, an image that
    is no qcow2) are left to it."""
    if not files.lexists(image) or (backing and not fmt):
        return
    chain = _chain_of(image)
    if not chain.layers[0].format:
        return  # no qcow2: qemu-img cannot give it a backing file
    old = chain.layers[1] if len(chain.layers) > 1 else None
    new = as_opened(os.path.join(os.path.dirname(image), backing)) if backing else None
    if new is not None and not files.exists(new):
        raise VshxError(
            f"refusing {line}: the new backing {backing} does not exist (from the directory of "
            f"{os.path.basename(image)}, where QEMU looks for it), so {os.path.basename(image)} "
            "would no longer open",
            "nothing was changed; give the path of an existing file",
        )
    offset = verify.first_visible_difference(
        chain.layers[0],
        old.path if old else None,
        old.format if old else None,
        new,
        fmt or None,
    )
    if offset is None:
        return
    shown = os.path.basename(image)
    safe = ["vshx", "rebase", image, "--backing", new or ""]
    safe += ["--backing-format", fmt] if fmt else []
    raise VshxError(
        f"refusing {line}: it would change what {shown} shows (its old backing "
        f"{old.name if old else '(none)'} and the new {backing or '(none)'} "
        f"{'as ' + fmt + ' ' if fmt else ''}differ at offset {offset}, where {shown} holds "
        "no data of its own)",
        "nothing was changed; without -u, qemu-img rebase copies the differences into it "
        f"({shell_line(safe)} does that), or commit the layers in between first",
    )


def _warn_lost_moments(
    session: Session,
    views: list[tuple[str, str | None]],
    line: str,
    users: Mapping[str, list[tuple[libvirt.virDomain, str]]],
) -> None:
    """Say which snapshots' moments a commit line destroys: those whose file shows what a
    written file holds without the commit's top above it (its own file, or one reading
    through it).  vshx's own commit says it in its plan's ``# loses:`` line and keeps a record
    of where the other moments are; a typed qemu-img line runs as typed (the tutorial's steps
    do exactly this), so it is said before it runs.  ``users``: the domain disks using each
    existing file of ``views``, read once before the other checks (a domain undefined or a
    snapshot deleted since is skipped: a warning never fails the line)."""
    lost: list[str] = []
    for path, through in views:
        if not files.lexists(path):
            continue
        written, top = identity(path), identity(through) if through else None
        for dom, _disk in users.get(path, ()):
            try:
                snapshots = read_snapshots(dom, "both")
            except libvirt.libvirtError:
                continue  # undefined meanwhile: it has no snapshots to lose
            for snap in snapshots:
                for disk, moment in snap.moments.items():
                    if not moment.file or not files.lexists(moment.file):
                        continue
                    try:
                        view = {identity(f) for f in chain_files(moment.file) if files.lexists(f)}
                    except VshxError:
                        continue  # a chain vshx cannot read: the usage checks below judge it
                    if written in view and top not in view:
                        lost.append(f"{snap.name} of {dom.name()} ({disk}: {moment.file})")
    if lost:
        session.warn(
            printable(
                f"`{line}` changes what these snapshots show, so their moments are lost: "
                f"{', '.join(dict.fromkeys(lost))} (vshx commit DOMAIN DISK plans the same "
                "merge with its keeps and loses, and keeps a record of the other snapshots)"
            )
        )


def _refuse_checkpoint_bitmap(
    argv: list[str], line: str, users: list[tuple[libvirt.virDomain, str]]
) -> None:
    """``qemu-img bitmap --remove/--clear/--disable FILE NAME`` where NAME is the bitmap of a
    libvirt checkpoint of a disk whose chain holds FILE (``users``: the domain disks whose
    chains hold it): libvirt's next incremental backup from it would fail, or copy too little
    (a cleared or stopped record of changes)."""
    if not {"--remove", "--clear", "--disable"} & set(argv[:-2]):
        return
    name = argv[-1]
    for dom, disk in users:
        owners = checkpoints_by_bitmap(dom, disk).get(name)
        if owners:
            forget = shell_line(["virsh", "checkpoint-delete", dom.name(), owners[0]])
            raise VshxError(
                f"refusing {line}: bitmap {name} is checkpoint {', '.join(owners)} of "
                f"{dom.name()} ({disk}); without it libvirt's incremental backups from that "
                "checkpoint fail or miss changes",
                f"nothing was changed; delete the checkpoint instead ({forget}: libvirt "
                "removes its bitmaps), then the next backup is a full one",
            )


def _commit_base(top: str, given: str, line: str) -> str:
    """The layer below ``top`` that ``qemu-img commit -b GIVEN`` writes into: the one whose
    header names it so, or (a relative GIVEN) the one it reaches from the directory of the
    image above it, as QEMU looks for it; anything else is refused (qemu-img would say "did
    not find it in the backing chain", and vshx must know the file before it checks it)."""
    layers = _chain_of(top).layers
    found = []
    for above, layer in zip(layers, layers[1:], strict=False):
        joined = given if os.path.isabs(given) else os.path.join(os.path.dirname(above.path), given)
        if above.backing == given or canonical(as_opened(joined)) == layer.canonical:
            found.append(layer.path)
    if len(set(found)) != 1:
        raise VshxError(
            f"cannot tell which layer below {top} `{line}` writes into: -b {given} names "
            f"{'no' if not found else 'more than one'} file of its chain",
            "nothing was changed; give -b the base's absolute path (vshx chain IMAGE lists "
            "the chain)",
        )
    return found[0]


def _backing_of(top: str) -> str | None:
    """The file a ``qemu-img commit TOP`` (no -b) writes into: TOP's backing file."""
    chain = _chain_of(top)
    return chain.layers[1].path if len(chain.layers) > 1 else None


def _chain_of(path: str) -> Chain:
    """The chain below ``path`` as its headers name it; a file that is no image: itself."""
    if not preflight.is_qcow2(path):
        return Chain([Layer(os.path.abspath(path), "", 0)])
    try:
        return image_chain(path)
    except VshxError as exc:
        raise VshxError(
            f"cannot read the chain of {path}: {exc.message}",
            "vshx runs a changing qemu-img line only on images it can read",
        ) from exc


def _refuse_running(session: Session, path: str, verb: str, line: str) -> None:
    """A file in a running domain's disk chain: QEMU writes there, qemu-img must not."""
    users = preflight.running_users(session, path)
    if not users:
        return
    domain, disk = users[0]
    how = {
        "commit": ["vshx", "commit", domain, disk, "..."],
        "rebase": ["vshx", "rebase", "--domain", domain, "--disk", disk, "..."],
    }.get(verb)
    instead = f"name the domain and disk instead ({shell_line(how)})" if how else ""
    raise VshxError(
        f"refusing {line}: {path} is in the disk chain of running "
        f"{preflight.running_labels(users)}",
        f"{instead or 'change it through the domain'}, or shut {domain} off first; "
        "nothing was changed",
    )
