"""Pre-flight checks shared by every merge plugin, run before anything changes.

Each check raises VshxError (error + hint) or returns quietly.  "Who else uses this file"
looks at other domains' chains on this connection, image files in the same directory and
libvirt storage pool volumes.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.plans import overlap
from vshx.plans.plan import shell_line
from vshx.plans.target import Target
from vshx.spec.render import quoted
from vshx.storage import host as files
from vshx.storage import virt
from vshx.storage.background import Background
from vshx.storage.chain import (
    BLANK,
    Chain,
    DiskSource,
    Layer,
    as_opened,
    blurred_refusal,
    canonical,
    relative_name,
)
from vshx.storage.identity import FileKey, identity
from vshx.storage.libvirt_lazy import libvirt

if TYPE_CHECKING:
    from vshx.plans.context import Context as Session
    from vshx.spec.spec import Args
    from vshx.storage.moments import Read


def running_users(session: Session, path: str) -> list[tuple[str, str]]:
    """Running domains whose disk chains contain the file ``path`` names (domain, disk); a
    disk whose file name has a line break or tab, by either file it may name."""
    key = functools.lru_cache(maxsize=None)(identity)
    found = []
    active = libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE
    running = list(virt.domains_with_disks(session.conn, active))
    if not files.current().local:  # a remote host answers them all in a few round trips
        from vshx.storage.qcow2 import prefetch_chains

        prefetch_chains([path, *(p for _dom, disks in running for p in _named(disks))])
    target = key(path)
    for dom, disks in running:
        for disk in disks:
            if not disk.source:
                continue
            if target in _disk_keys(disk, key):
                found.append((dom.name(), disk.target))
    return list(dict.fromkeys(found))  # a blurred disk's two readings: one disk


def domain_users(
    session: Session, path: str, ahead: Background[virt.HostRead] | None = None
) -> list[tuple[libvirt.virDomain, str]]:
    """Every domain disk (domain, target) whose chain holds the file ``path`` names: shut-off
    and running domains, and the disks a running one's persistent definition names otherwise.
    A disk's chain is what its definition names and what the headers add, compared by
    identity; a disk whose file name has a line break or tab holds the files of both names it
    may mean (virt.every_defined_disk); ``ahead``: the host's domains, read already
    (``read_host_ahead``).  A definition or header that cannot be read raises (fail closed),
    as the usage scan does."""
    return domains_using(session, [path], ahead)[path]


def domains_using(
    session: Session, paths: list[str], ahead: Background[virt.HostRead] | None = None
) -> dict[str, list[tuple[libvirt.virDomain, str]]]:
    """``domain_users`` of each of ``paths`` (path -> its users), from one read of the host's
    domains: checks that each want the users of the same files share one scan."""
    if ahead is not None:
        with overlap.parked():  # in a batch, the next line is checked meanwhile
            domains = ahead.result()[0]
    else:
        domains = virt.domains_with_disks(session.conn)
    key = functools.lru_cache(maxsize=None)(identity)
    if not files.current().local:  # a remote host answers them all in a few round trips
        from vshx.storage.qcow2 import prefetch_chains

        prefetch_chains([*paths, *(p for _dom, disks in domains for p in _named(disks))])
    targets = {path: key(path) for path in paths}
    found: dict[str, dict[tuple[str, str], libvirt.virDomain]] = {path: {} for path in paths}
    for dom, disks in domains:
        for disk in disks:
            if not disk.source:
                continue
            held = _disk_keys(disk, key)
            for path, target in targets.items():
                if target in held:  # live and defined: one disk
                    found[path].setdefault((dom.name(), disk.target), dom)
    return {
        path: [(dom, disk) for (_name, disk), dom in users.items()] for path, users in found.items()
    }


def _named(disks: list[DiskSource]) -> list[str]:
    """The files local disks' definitions name (source and backing), for a remote prefetch."""
    return [
        p
        for disk in disks
        if _readable(disk)
        for p in [disk.source or "", *(b for b, _f, _i in disk.backing if b)]
    ]


def running_labels(users: list[tuple[str, str]]) -> str:
    return ", ".join(f"domain {domain} {disk}" for domain, disk in users)


def refuse_if_running_user(session: Session, path: str, hint: str) -> None:
    users = running_users(session, path)
    if users:
        raise VshxError(f"{path} is in use by running {running_labels(users)}", hint)


def _disk_keys(disk: DiskSource, key: Callable[[str], FileKey]) -> set[FileKey]:
    """Every file a disk's data is in: its definition's chain and what the headers add."""
    paths = [disk.source or ""] + [p for p, _f, _i in disk.backing if p]
    files = [f for p in paths for f in _chain_files(p)] if _readable(disk) else paths
    return {key(f) for f in files}


def _blurred_name(disk: DiskSource) -> str:
    """The name with a line break or tab in it that a blurred disk's reading names (the exact
    one, listed first: chain.disks_from_xml)."""
    named = [disk.source or "", *(p for p, _f, _i in disk.backing)]
    return next((p for p in named if BLANK.search(p)), disk.source or disk.target)


def _readable(disk: DiskSource) -> bool:
    """A local file or device (not a network disk such as rbd or iscsi)."""
    return bool(disk.source) and os.path.isabs(disk.source or "")


def _device(path: str) -> bool:
    return files.exists(path) and not files.isfile(path)


def _chain_files(path: str) -> list[str]:
    from vshx.storage.qcow2 import chain_files

    return chain_files(path)


def _chain_reader() -> Callable[[str], list[str]]:
    """``chain_files`` for one scan: the chains of a directory's images run through the same
    files (sn4's holds sn3's, which holds sn2's...), so each header is read once per scan."""
    from vshx.storage.qcow2 import chain_files, header_names

    names_of = functools.lru_cache(maxsize=None)(header_names)
    return lambda path: chain_files(path, names_of=names_of)


def _image_files(path: str) -> list[str]:
    from vshx.storage.qcow2 import image_files

    return image_files(path)


SHOWN_DIRS = 3  # other directories a scan's summary names (the chain's own: always)


class UsageIndex:
    """Who uses which files in their chains, gathered once per command.

    Files are compared by identity (``storage.identity``: device and inode), so a hard link,
    a bind mount, a symlink or a ``json:`` backing name reaching a file is that file; a chain
    holds its layers, the files its ``json:`` backing names name and its qcow2 external data
    files.  Scanned: every domain's disks (every device type: disk, cdrom, floppy, lun) with
    their whole chains; every storage pool, active or not (an active pool's volumes with their
    whole chains, compared by the file each reaches, as a disk is; an inactive file pool's
    files in its directory likewise; the target directory of each); every qcow2 image,
    whatever its name, in the directories libvirt knows of (pool targets, the directories of
    every domain disk), the chain's own directory and ``--scan DIR``.  Not scanned: other
    directories, other hosts sharing the storage (an inactive fs or netfs pool's file system
    while it is not mounted), images on other URIs.  A directory, pool or header that cannot
    be read makes the scan refuse (fail closed).

    Another domain's disk (or snapshot) whose file name has a line break or tab uses both
    files it may mean: the exact name (the file QEMU opened) and the one with a space there
    (the file libvirt opens once it reads its XML again), with their chains; the domain the
    plan works on refuses such a name (``chain.blurred_refusal``), as its own disk's read does.
    """

    def __init__(
        self,
        session: Session,
        ours: Chain,
        going: set[str] | None = None,
        *,
        snapshots: Read | None = None,
        ahead: Background[virt.HostRead] | None = None,
        leaving: str | None = None,
    ) -> None:
        """``snapshots``: this domain's snapshots as the plan read them (Target.snapshots);
        ``ahead``: the domains and pools, read since the chain's lock was taken
        (``read_host_ahead``); each is read now when not given; ``leaving``: a domain that
        goes away with these files (lab-destroy): its disks and snapshots are no users."""
        if ahead is not None:
            with overlap.parked():  # in a batch, the next line is checked meanwhile
                host = ahead.result()
        else:
            host = virt.read_host(session.conn)
        _prefetch(session, ours, host, snapshots)
        # one scan meets the same files again and again: one stat each
        self._key: Callable[[str], FileKey] = functools.lru_cache(maxsize=None)(identity)
        self._files = functools.lru_cache(maxsize=None)(_chain_reader())
        own = [f for layer in ours.layers for f in _image_files(layer.path)]
        self.mine = {self._key(f) for f in own}
        self.domains: list[tuple[str, set[FileKey]]] = []
        self._chains_of: list[tuple[str, set[FileKey]]] = []  # (domain, its disk's chain)
        self.sources: set[FileKey] = set()  # domain disk sources, not to be named twice as images
        directories = {
            os.path.dirname(layer.canonical) for layer in ours.layers if not _device(layer.path)
        }
        # named first where a hint lists what was scanned (with --scan's directory)
        self._chain_dirs = set(directories)
        self._others = [dom for dom, _disks in host[0] if dom.name() not in (ours.domain, leaving)]
        self._named: list[tuple[str, set[FileKey], str | None, set[FileKey]]] | None = None
        # other domains' snapshot XMLs are a round trip each: read on a thread meanwhile
        from vshx.storage.snapshot_refs import named_by

        conn, others = session.conn, self._others
        self._named_ahead = Background(lambda: named_by(conn, others))
        self.snapshot_owners: dict[str, str] = {}  # a user label -> its snapshot's domain
        for dom, disks in host[0]:
            if dom.name() == leaving:
                continue
            for disk in disks:
                if dom.name() == ours.domain and disk.blurred:
                    # the domain the plan works on: as its disk's read refuses (this one may be
                    # a running domain's persistent definition, which that read does not see)
                    raise blurred_refusal(f"domain {dom.name()}", _blurred_name(disk))
                if not disk.source:
                    continue
                if _readable(disk) and not _device(disk.source):  # images, not /dev
                    directories.add(os.path.dirname(canonical(disk.source)))
                if dom.name() == ours.domain and disk.target == ours.disk:
                    # our own disk, unless its persistent definition names another file than
                    # our active layer (the domain would boot on that one)
                    if not disk.persistent_only or self._key(disk.source) == self._key(
                        ours.active.path
                    ):
                        continue
                paths = [disk.source] + [p for p, _f, _i in disk.backing if p]
                if _readable(disk):
                    paths = [f for p in paths for f in self._files(p)]
                defined = " in its persistent definition" if disk.persistent_only else ""
                keys = {self._key(p) for p in paths}
                self.domains.append(
                    (
                        f"domain {dom.name()} {disk.device} {disk.target}{defined} ({disk.source})",
                        keys,
                    )
                )
                self._chains_of.append((dom.name(), keys))
                self.sources.add(self._key(disk.source))
        # this domain's merged-away layers are no users, except when deciding a deletion:
        # then only the files deleted together pass each other over
        leaves = ours.domain is not None and ours.domain == leaving
        try:
            snaps = _own_snapshots(session, ours, snapshots)
        except VshxError:
            if not leaves:
                raise
            snaps = []  # undefined already (lab-destroy's rm, after its undefine step)
        passed = (
            _own_snapshot_named(session, ours, self._key, [] if leaves else snaps)
            if going is None
            else {p: self._key(p) for p in going}
        )
        # what its snapshots off the current history name (a revert's branch), or, for a
        # domain that goes away, all of them: users wherever they are, as an image in a
        # scanned directory is (atk21 #4: a branch leaf elsewhere; atk22 #5: lab-destroy)
        self._off_history = _off_history_files(ours, snaps, everything=leaves)
        self.passed_over = set(passed.values())
        # a pool volume is one of these files only by the name the chain or its snapshots give
        # it (a pool directory holding the chain's own images): under another name (a symlink
        # in the pool's directory, a hard link) it is a user, as another domain's disk is
        entries = {e for p in [*own, *passed] for e in _entries(p, self._key)}
        self.pools, pool_dirs = _pool_chains(
            host[1], self.mine | self.passed_over, entries, self.sources, self._key, self._files
        )
        scan = session.args.get("scan") if session.args else None
        if scan and not files.isdir(scan):  # a typo must not read as "scanned"
            raise VshxError(
                f"--scan {scan}: no such directory",
                "name a directory that holds images whose chains may use these files",
            )
        self.directories = sorted(directories | pool_dirs | ({canonical(scan)} if scan else set()))
        self._chain_dirs |= {canonical(scan)} if scan else set()  # asked for: always named
        self._images: list[tuple[str, set[FileKey]]] | None = None

    def images(self) -> list[tuple[str, set[FileKey]]]:
        """qcow2 images (by header, any file name) in every scanned directory."""
        if self._images is None:
            skip = self.mine | self.passed_over | self.sources
            found = []
            seen: set[FileKey] = set()  # the images found in the directories
            for directory in self.directories:
                try:
                    names = sorted(files.listdir(directory))
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise VshxError(
                        f"cannot scan {directory} for images that use this chain: {exc.strerror}",
                        "vshx refuses what it cannot check; fix the permissions or --force",
                    ) from exc
                for name in names:
                    candidate = os.path.join(directory, name)
                    kind = _image_kind(candidate)
                    if kind is None or self._key(candidate) in skip:
                        continue
                    where = ", an image in a directory vshx scans for their users"
                    below = self._below(candidate, kind, candidate, where)
                    found.append((f"image {candidate}", below))
                    seen.add(self._key(candidate))
            for path, label in self._off_history.items():
                kind = _image_kind(path)
                if kind is None or self._key(path) in self.mine | seen:
                    continue  # gone, not an image, a layer of the chain, or found above
                found.append((label, self._below(path, kind, label)))
            self._images = found
        return self._images

    def _below(self, image: str, kind: str, what: str, where: str = "") -> set[FileKey]:
        """The files ``image`` reads through; one that cannot be read refuses, naming ``what``
        holds it (fail closed: atk20 #6 was refused without a word of which image)."""
        try:
            below = self._files(image)[1:] if kind == "qcow2" else _asked(image)
        except VshxError as exc:
            message = f"cannot tell whether {what} uses these files{where}: {exc.message}"
            raise VshxError(message, exc.hint) from None
        return {self._key(p) for p in below}

    def named(self) -> list[tuple[str, set[FileKey], str | None, set[FileKey]]]:
        """What other domains' snapshots (memory state, disk files) and managed-save images
        name, with the domain whose snapshot names it: a file one of them names is in use,
        even out of every chain, and so is every file such an image reads through (an entry
        of its own, labelled so); the last item: the named file's whole chain (which decides
        whether a commit reaches BASE through TOP)."""
        if self._named is None:
            with overlap.parked():  # in a batch, the next line is checked meanwhile
                named = self._named_ahead.result()
            if not files.current().local:  # their identities in a few round trips
                from vshx.storage.qcow2 import prefetch_chains

                prefetch_chains([n.path for n in named])
            found: list[tuple[str, set[FileKey], str | None, set[FileKey]]] = []
            for n in named:
                # the files a named image reads through, as its qcow2 headers name them:
                # writing into one of them, or deleting it, takes that moment away too
                chain = {self._key(p) for p in self._files(n.path)}
                itself = {self._key(n.path)}
                found.append((n.label, itself, n.snapshot_of, chain))
                if chain - itself:
                    label = f"{n.label}: {n.path} reads through it"
                    found.append((label, chain - itself, n.snapshot_of, chain))
            self._named = found
        return self._named

    def scanned(self) -> str:
        """What was looked at, for a hint: the chain's own directories by name, then a few of
        the others (a host's every disk and pool directory made a hint of dozens of paths)."""
        rest = [d for d in self.directories if d not in self._chain_dirs]
        shown = [d for d in self.directories if d in self._chain_dirs] + rest[:SHOWN_DIRS]
        more = len(rest) - SHOWN_DIRS
        return (
            f"scanned {len(self.domains)} other domain disks, the snapshots and managed-save "
            f"images of {len(self._others)} other domains, {len(self.pools)} pool volumes "
            f"and the images in {', '.join(shown)}"
            + (f" and {more} more directories of domains' disks and pools" if more > 0 else "")
        )

    def users_of(self, path: str, through: str | None = None, *, alone: bool = False) -> list[str]:
        """Chains outside ours that contain the file ``path`` (or its external data file),
        and, with ``through``, not that file; ``alone``: the file itself, not its data file
        (deleting an image's metadata takes nothing from a chain that reads only its data
        file: merging/data_files.py judges that file on its own).

        Committing TOP into BASE changes nothing for a chain that reaches BASE through TOP
        (TOP is not emptied), only for the others.
        """
        targets = {self._key(f) for f in ([path] if alone else _image_files(path))}
        passing = self._key(through) if through else None

        def uses(keys: set[FileKey], chain: set[FileKey] | None = None) -> bool:
            through_top = passing is not None and passing in (keys if chain is None else chain)
            return bool(targets & keys) and not through_top

        holders = self.domains + self.images() + self.pools
        found = [label for label, keys in holders if uses(keys)]
        # a domain whose disk's chain holds the file answers for its own snapshots there:
        # its disk decides (through TOP or not), its snapshots' moments are its own plans'
        chained = {name for name, keys in self._chains_of if targets & keys}
        for label, keys, snapshot_of, chain in self.named():
            if uses(keys, chain) and (snapshot_of is None or snapshot_of not in chained):
                found.append(label)
                if snapshot_of is not None:
                    self.snapshot_owners[label] = snapshot_of
        return list(dict.fromkeys(found))  # a snapshot naming one file twice is one user


def _prefetch(session: Session, ours: Chain, host: virt.HostRead, snapshots: Read | None) -> None:
    """Gather every file and directory the scan asks about first (a remote host answers them
    in a few round trips instead of one a file; nothing happens locally)."""
    if files.current().local:
        return
    paths = [layer.path for layer in ours.layers]
    for _dom, disks in host[0]:
        for disk in disks:
            if _readable(disk):
                paths += [disk.source or ""] + [p for p, _f, _i in disk.backing if p]
    directories = {os.path.dirname(p) for p in paths}
    if not isinstance(host[1], VshxError):
        for pool in host[1]:
            directories |= {pool.target} if pool.target else set()
            paths += [path for _volume, path in pool.volumes if os.path.isabs(path)]
    for snap in snapshots or ():
        paths += [p for m in snap.moments.values() for p in (m.file, m.overlay) if p]
    scan = session.args.get("scan") if session.args else None
    from vshx.storage.qcow2 import prefetch_chains

    prefetch_chains(paths, sorted(directories | ({scan} if scan else set())))


def _image_kind(path: str) -> str | None:
    """ "qcow2" for a regular file with a qcow2 header, "other" for a QED or VMDK image (whose
    names vshx asks qemu-img for), None for anything else; one that cannot be read refuses."""
    from stat import S_ISREG

    from vshx.storage.formats import names_other_files
    from vshx.storage.qcow2 import MAGIC

    try:
        mode = files.stat(path).st_mode
        if not S_ISREG(mode):
            return None  # a directory, device, socket or FIFO (opening a FIFO would hang)
        head = files.read(path, 1024)
        if head[:4] == MAGIC:
            return "qcow2"
        return "other" if names_other_files(head) else None
    except (FileNotFoundError, NotADirectoryError):
        return None  # gone while we looked, or a dangling symlink: no user
    except OSError as exc:
        raise VshxError(
            f"cannot read {path} to see whether it uses this chain: {exc.strerror}",
            "vshx refuses what it cannot check; fix the permissions, or move that file away",
        ) from exc


def _asked(path: str) -> list[str]:
    """The files below a QED or VMDK image, as qemu-img reads them (-U: works while in use);
    one qemu-img cannot open refuses (fail closed)."""
    from vshx.storage import qemuimg

    try:
        chain = qemuimg.info_chain(path)
    except VshxError as exc:
        raise VshxError(
            f"cannot read {path} to see whether it uses this chain: {exc.message}",
            "vshx refuses what it cannot check; repair or move that image away",
        ) from exc
    return [str(layer.get("filename", "")) for layer in chain[1:] if layer.get("filename")]


def is_qcow2(path: str) -> bool:
    """A qcow2 image by its header, whatever its name."""
    from vshx.storage.qcow2 import MAGIC

    try:
        return files.isfile(path) and files.read(path, 4) == MAGIC
    except IsADirectoryError:
        return False
    except OSError:
        return False


def other_users(session: Session, path: str, ours: Chain, through: str | None = None) -> list[str]:
    """Everything outside ``ours`` whose chain contains ``path``: domains, files, pool volumes."""
    return UsageIndex(session, ours).users_of(path, through)


def _own_snapshot_named(
    session: Session,
    ours: Chain,
    key: Callable[[str], FileKey] = identity,
    snapshots: Read | None = None,
) -> dict[str, FileKey]:
    """Files (name -> identity) this domain's own snapshot metadata names that are not users:
    the moment files and overlays of the current snapshot's own history (it and its
    ancestors), whose data the chain holds or held (merged-away layers: the plan accounts for
    the moments they hold).

    A file any snapshot off that history names (a branch a snapshot-revert left: the
    reverted-to snapshot's descendants, or, once a snapshot was taken after the revert, their
    subtree as its siblings) is a user like any image, even where a snapshot of the history
    names it too (the reverted-to snapshot's own overlay, its child's moment): it holds the
    guest's writes before the revert, which no moment of the current history covers, and it
    reads through the files the chain shares with it.  Which snapshot is current decides,
    never which was taken last: a snapshot taken after the revert is current, and the old
    branch is no longer its descendant.  With no current snapshot no history is known: every
    file out of the chain that a snapshot names is a user (fail closed)."""
    if not ours.domain:
        return {}
    snaps = _own_snapshots(session, ours, snapshots)
    line = _current_line(snaps)
    on_line: dict[str, FileKey] = {}
    for snap in snaps:
        if snap.name in line:
            on_line.update(
                {p: key(p) for m in snap.moments.values() for p in (m.file, m.overlay) if p}
            )
    # every file a snapshot off it names: a disk it left out (snapshot='no') too, whose saved
    # definition names the file that disk was on then (atk20 #1: the branch's leaf)
    off_line = {key(p) for p in _off_history_files(ours, snaps)}
    return {p: k for p, k in on_line.items() if k not in off_line}


def _own_snapshots(session: Session, ours: Chain, snapshots: Read | None) -> Read:
    """The snapshots of the chain's domain: as the plan read them, else read now."""
    if snapshots is not None or not ours.domain:
        return snapshots or []
    from vshx.storage.moments import read_snapshots

    return read_snapshots(virt.lookup_domain(session.conn, ours.domain))


def _off_history_files(ours: Chain, snaps: Read, everything: bool = False) -> dict[str, str]:
    """Every file a snapshot off the current history names (moment files, overlays, the disks
    its saved definition names, its memory state), each with a label; ``everything``: every
    snapshot's (a domain that goes away keeps no history).  With no current snapshot no
    history is known: every snapshot is off it (fail closed)."""
    from vshx.storage.snapshot_refs import snapshot_files

    line = set() if everything else _current_line(snaps)
    found: dict[str, str] = {}
    for snap in snaps:
        if snap.name in line:
            continue
        named = [p for m in snap.moments.values() for p in (m.file, m.overlay) if p]
        named += [p for _what, p in (snapshot_files(snap.xml) if snap.xml else [])]
        for path in named:
            label = f"domain {ours.domain} snapshot {snap.name} (off the current history): {path}"
            found.setdefault(path, label)
    return found


def _own_snapshot_files(
    session: Session,
    ours: Chain,
    key: Callable[[str], FileKey] = identity,
    snapshots: Read | None = None,
) -> set[FileKey]:
    """The identities of ``_own_snapshot_named``'s files."""
    return set(_own_snapshot_named(session, ours, key, snapshots).values())


def _current_line(snapshots: Read) -> set[str]:
    """The current snapshot and its ancestors: the history the disks grew from (as
    Timeline.current_line); empty when none is current."""
    by_name = {s.name: s for s in snapshots}
    line: set[str] = set()
    snap = next((s for s in snapshots if s.current), None)
    while snap is not None and snap.name not in line:
        line.add(snap.name)
        snap = by_name.get(snap.parent) if snap.parent else None
    return line


def read_host_ahead(session: Session) -> Background[virt.HostRead]:
    """Start the libvirt reads of a usage scan now, on a thread: its waits (libvirt answers a
    domain only when it can lock it) overlap the rest of the pre-flight."""
    conn = session.conn
    return Background(lambda: virt.read_host(conn))


def _pool_chains(
    pools: list[virt.PoolRead] | VshxError,
    ours: set[FileKey],
    entries: set[tuple[FileKey, str]],
    sources: set[FileKey],
    key: Callable[[str], FileKey],
    chain_of: Callable[[str], list[str]],
) -> tuple[list[tuple[str, set[FileKey]]], set[str]]:
    """Pool volumes with their whole chains, and every pool's directory.

    A volume is compared by the file it reaches (identity: a symlink's target, a hard link's
    inode), as a domain's disk is; passed over: a volume that is one of ``ours`` by a name
    the chain or its snapshots give it (its directory entry is in ``entries``: the pool's
    directory holds the chain's own images; a device by any name), and another domain's disk
    (``sources``: named as that domain).  An inactive pool of files (dir, fs, netfs) lists no
    volumes in libvirt: the files in its target directory are its volumes (libvirt lists
    them once it starts); an inactive pool of another type (logical, disk, iscsi...) has no
    volume a process on this host can open until it starts.  A volume whose file cannot be
    looked at refuses (fail closed); a dangling symlink reaches no file."""
    if isinstance(pools, VshxError):
        raise pools
    found: list[tuple[str, set[FileKey]]] = []
    directories: set[str] = set()
    for pool in pools:
        if pool.target:
            directories.add(canonical(pool.target))
        volumes, inactive = pool.volumes, ""
        if not pool.active and pool.kind in FILE_POOLS and pool.target:
            volumes, inactive = _files_in(pool.target), " (pool inactive)"
        for volume, path in volumes:
            if not os.path.isabs(path):
                continue  # a network pool's volume (rbd, gluster): no local file
            reached = key(path)
            if isinstance(reached, str) or reached in sources:
                continue  # not there (a dangling symlink), or another domain's disk
            if reached in ours and (_device(path) or _entry(path, key) in entries):
                continue  # the chain's own file by its own name
            label = f"pool {pool.name} volume {volume}{inactive} ({path})"
            found.append((label, {key(f) for f in chain_of(path)}))
    return found, directories


FILE_POOLS = ("dir", "fs", "netfs")
"""Pool types whose volumes are the files in their target directory."""


def _files_in(directory: str) -> list[tuple[str, str]]:
    """The regular files (or symlinks to them) in an inactive pool's directory, as (volume,
    path); a directory that is not there holds none, one that cannot be read refuses."""
    try:
        names = sorted(files.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise VshxError(
            f"cannot read {directory}, the directory of an inactive storage pool, for files "
            f"that use this chain: {exc.strerror}",
            "vshx refuses what it cannot check; fix the permissions, or --force",
        ) from exc
    found = []
    for name in names:
        path = os.path.join(directory, name)
        try:
            regular = stat.S_ISREG(files.stat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            continue  # gone while we looked, or a dangling symlink
        except OSError as exc:
            raise VshxError(
                f"cannot look at {path}, in the directory of an inactive storage pool: "
                f"{exc.strerror}",
                "vshx refuses what it cannot check; fix the permissions, or move it away",
            ) from exc
        if regular:  # not a directory, FIFO or socket (opening a FIFO would hang)
            found.append((name, path))
    return found


def _entry(path: str, key: Callable[[str], FileKey]) -> tuple[FileKey, str]:
    """The directory entry ``path`` names: its directory's identity and its name in it (one
    name reached through a bind mount or a symlinked directory is one entry; a hard link or
    a symlink to the file is another entry)."""
    name = as_opened(path)
    return key(os.path.dirname(name) or "/"), os.path.basename(name)


def _entries(path: str, key: Callable[[str], FileKey]) -> set[tuple[FileKey, str]]:
    """The entry a name of one of the chain's files gives, and, when it is a symlink, the
    entry of the file it leads to (a pool listing that file is the file the chain names)."""
    return {_entry(path, key), _entry(files.realpath(path), key)}


class SharedFile(VshxError):
    """``refuse_shared``'s refusal: other chains read the file a commit would write (a plan
    with another route says so in its hint)."""


def refuse_shared(
    session: Session,
    path: str,
    ours: Chain,
    force: bool,
    doing: str,
    through: str | None = None,
    *,
    snapshots: Read | None = None,
    ahead: Background[virt.HostRead] | None = None,
) -> None:
    """Refuse to change a file other chains depend on, unless --force (``snapshots``,
    ``ahead``: what the plan has read already, as for UsageIndex)."""
    index = UsageIndex(session, ours, snapshots=snapshots, ahead=ahead)
    users = index.users_of(path, through)
    if not users:
        return
    if force:
        session.warn(f"{doing} {path}, which is also used by: {'; '.join(users)} (--force)")
        return
    owners = sorted({index.snapshot_owners[u] for u in users if u in index.snapshot_owners})
    through_domain = (
        f"these are snapshots of {', '.join(owners)}: name the domain and disk instead "
        f"({shell_line(['vshx', 'commit', owners[0]])} DISK ...), which accounts for their "
        "moments; "
        if owners and not ours.domain
        else ""
    )
    raise SharedFile(
        f"refusing: {doing} {path} would change what these see: {'; '.join(users)}",
        f"{through_domain}merge those first (or delete them if they are files an earlier merge "
        f"left behind), or use --force if you are sure ({index.scanned()})",
    )


def refuse_block_job(target: Target) -> None:
    if target.dom is None or not target.live:
        return
    info = virt.block_job_info(target.dom, target.chain.disk or "")
    if info:
        kinds = {1: "pull", 2: "copy", 3: "commit", 4: "active commit", 5: "backup"}
        kind = kinds.get(info.get("type", 0), "block")
        kind = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
        where = [target.chain.domain or "", target.chain.disk or ""]
        if target.xml is not None and virt.mirror_ready(target.xml, where[1]):
            # a ready copy or active commit never ends by itself: waiting would be forever
            raise VshxError(
                f"{kind} job on {target.chain.domain} {target.chain.disk} is ready and waits "
                "for its pivot",
                f"finish it: {shell_line(['vshx', 'recover', *where, '--pivot'])} (or --abort "
                f"to leave the disk on its old chain); virsh: "
                f"{shell_line(['virsh', 'blockjob', *where, '--pivot'])}",
            )
        raise VshxError(
            f"{kind} job is already running on {target.chain.domain} {target.chain.disk} "
            f"({info.get('cur', 0)}/{info.get('end', 0)} bytes)",
            f"wait for it, or abort it: {shell_line(['virsh', 'blockjob', *where, '--abort'])}",
        )


def free_bytes(path: str) -> int:
    """Free space for an unprivileged writer in the file system that holds ``path``."""
    return files.free_bytes(os.path.dirname(path))


def refuse_unsafe_start(session: Session, target: Target, args: Args) -> None:
    """What every merge refuses before it plans: offline steps on a remote URI, a bare image
    a running domain uses, a block job already running on the disk."""
    refuse_remote_offline(session, target, session.planning_only(args))
    if target.dom is None:
        refuse_if_running_user(
            session, target.chain.active.path, "name the domain and disk instead of the image"
        )
    refuse_block_job(target)


def refuse_remote_offline(session: Session, target: Target, planning_only: bool) -> None:
    """Offline steps run where the files are: on a qemu+ssh:// host through ssh
    (storage/host.py); a remote URI of another transport has no way to its files."""
    if target.live or planning_only or session.is_local:
        return
    from vshx.storage.host import Unreachable, current

    where = current()
    if isinstance(where, Unreachable):
        why = where.refusal()
        raise VshxError(f"offline steps run qemu-img where the images are: {why}", why.hint)


def relative_or_absolute(new_backing: Layer, overlay: Layer, keep_relative: bool) -> str:
    """The backing name to write into ``overlay``: relative where the chain used relative names."""
    if keep_relative or overlay.backing_is_relative:
        return relative_name(new_backing.path, overlay.path)
    return new_backing.path


def refuse_unkept_relative(chain: Chain, upper: Layer, base: Layer) -> None:
    """``--keep-relative`` keeps the relative backing names a chain has: libvirt refuses it
    ("can't keep relative backing relationship") where a name from ``upper`` down to ``base``
    is not relative, and so does vshx offline (atk12 F6), rather than write a relative name
    into a chain that had none."""
    for layer in chain.layers[upper.position : base.position]:
        if not layer.backing_is_relative:
            raise VshxError(
                f"can't keep relative backing relationship: {layer.name} names its backing "
                f"file {quoted(layer.backing or '')}, not a relative name",
                "drop --keep-relative: the chain keeps the kind of names it has (libvirt "
                "refuses the option for a running domain's chain too)",
            )


def require_format(layer: Layer) -> str:
    if not layer.format:
        raise VshxError(f"unknown format of {layer.path}", "check it with: qemu-img info")
    return layer.format
