"""Pre-flight checks shared by every merge plugin, run before anything changes.

Each check raises VshxError (error + hint) or returns quietly.  "Who else uses this file"
looks at other domains' chains on this connection, image files in the same directory and
libvirt storage pool volumes.
"""

from __future__ import annotations

import functools
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.merging.target import Target
from vshx.storage import virt
from vshx.storage.chain import Chain, Layer, canonical
from vshx.storage.libvirt_lazy import libvirt

if TYPE_CHECKING:
    from vshx.shell.session import Session
    from vshx.shell.spec import Args


def running_users(session: Session, path: str) -> list[str]:
    """Running domains whose disk chains contain ``path`` ("domain disk")."""
    target = canonical(path)
    found = []
    active = libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE
    for dom, disks in virt.domains_with_disks(session.conn, active):
        for disk in disks:
            paths = [disk.source or ""] + [p for p, _f, _i in disk.backing]
            if any(p and canonical(p) == target for p in paths):
                found.append(f"domain {dom.name()} {disk.target}")
    return found


def refuse_if_running_user(session: Session, path: str, hint: str) -> None:
    users = running_users(session, path)
    if users:
        raise VshxError(f"{path} is in use by running {', '.join(users)}", hint)


def _chain_paths(path: str, resolve: Callable[[str], str] = canonical) -> list[str]:
    from vshx.storage.qcow2 import chain_paths

    return chain_paths(path, resolve=resolve)


class UsageIndex:
    """Who names which files in their chains, gathered once per command.

    Scanned: every domain's disks with their whole chains; every storage pool, active or not
    (an active pool's volumes with their whole chains, and the target directory of each);
    every qcow2 image, whatever its name, in the directories libvirt knows of (pool targets,
    the directories of every domain disk), the chain's own directory and ``--scan DIR``.  Not
    scanned: other directories, other hosts sharing the storage, images on other URIs.
    A directory or pool that cannot be read makes the scan refuse (fail closed).
    """

    def __init__(self, session: Session, ours: Chain, going: set[str] | None = None) -> None:
        # one scan resolves the same directories and backing names again and again
        self._canonical: Callable[[str], str] = functools.lru_cache(maxsize=None)(canonical)
        self.mine = {layer.canonical for layer in ours.layers}
        self.domains: list[tuple[str, list[str]]] = []
        self.sources: set[str] = set()  # domain disk sources, not to be named twice as images
        directories = {os.path.dirname(layer.canonical) for layer in ours.layers}
        for dom, disks in virt.domains_with_disks(session.conn):
            for disk in disks:
                if not disk.source or disk.device not in ("disk", "cdrom"):
                    continue
                directories.add(os.path.dirname(self._canonical(disk.source)))
                if dom.name() == ours.domain and disk.target == ours.disk:
                    continue
                paths = [self._canonical(disk.source)] + [
                    self._canonical(p) for p, _f, _i in disk.backing
                ]
                if os.path.exists(disk.source):
                    paths = list(dict.fromkeys(paths + _chain_paths(disk.source, self._canonical)))
                self.domains.append(
                    (f"domain {dom.name()} disk {disk.target} ({disk.source})", paths)
                )
                self.sources.add(self._canonical(disk.source))
        # this domain's merged-away layers are no users, except when deciding a deletion:
        # then only the files deleted together pass each other over
        self.passed_over = _own_snapshot_files(session, ours) if going is None else going
        skip = self.mine | self.passed_over | self.sources
        self.pools, pool_dirs = _pool_chains(session, skip, self._canonical)
        scan = session.args.get("scan") if session.args else None
        self.directories = sorted(
            directories | pool_dirs | ({self._canonical(scan)} if scan else set())
        )
        self._images: list[tuple[str, list[str]]] | None = None

    def images(self) -> list[tuple[str, list[str]]]:
        """qcow2 images (by header, any file name) in every scanned directory."""
        if self._images is None:
            skip = self.mine | self.passed_over | self.sources
            found = []
            for directory in self.directories:
                try:
                    names = sorted(os.listdir(directory))
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise VshxError(
                        f"cannot scan {directory} for images that use this chain: {exc.strerror}",
                        "vshx refuses what it cannot check; fix the permissions or --force",
                    ) from exc
                for name in names:
                    candidate = os.path.join(directory, name)
                    if self._canonical(candidate) in skip or not is_qcow2(candidate):
                        continue
                    found.append(
                        (f"image {candidate}", _chain_paths(candidate, self._canonical)[1:])
                    )
            self._images = found
        return self._images

    def scanned(self) -> str:
        return (
            f"scanned {len(self.domains)} other domain disks, {len(self.pools)} pool volumes "
            f"and the images in {', '.join(self.directories)}"
        )

    def users_of(self, path: str, through: str | None = None) -> list[str]:
        """Chains outside ours that contain ``path`` (and, with ``through``, not that file).

        Committing TOP into BASE changes nothing for a chain that reaches BASE through TOP
        (TOP is not emptied), only for the others.
        """
        target = self._canonical(path)
        passing = self._canonical(through) if through else None
        holders = self.domains + self.images() + self.pools
        return [
            label
            for label, paths in holders
            if target in paths and (passing is None or passing not in paths)
        ]


def is_qcow2(path: str) -> bool:
    """A qcow2 image by its header, whatever its name."""
    from vshx.storage.qcow2 import MAGIC

    try:
        with open(path, "rb") as handle:
            return handle.read(4) == MAGIC
    except IsADirectoryError:
        return False
    except OSError:
        return False


def other_users(session: Session, path: str, ours: Chain, through: str | None = None) -> list[str]:
    """Everything outside ``ours`` whose chain contains ``path``: domains, files, pool volumes."""
    return UsageIndex(session, ours).users_of(path, through)


def _own_snapshot_files(session: Session, ours: Chain) -> set[str]:
    """Files this domain's own snapshot metadata names: its merged-away layers, not users."""
    if not ours.domain:
        return set()
    from vshx.storage.snapshots import domain_snapshots

    dom = virt.lookup_domain(session.conn, ours.domain)
    return {canonical(f) for info in domain_snapshots(dom) for f in info.files}


def _pool_chains(
    session: Session, skip: set[str], resolve: Callable[[str], str] = canonical
) -> tuple[list[tuple[str, list[str]]], set[str]]:
    """Pool volumes not in ``skip`` with their whole chains, and every pool's directory."""
    found: list[tuple[str, list[str]]] = []
    directories: set[str] = set()
    try:
        pools = session.conn.listAllStoragePools(0)
        for pool in pools:
            target = ET.fromstring(pool.XMLDesc(0)).findtext("./target/path")
            if target:
                directories.add(resolve(target))
            if not pool.isActive():
                continue  # its volumes are not listed; its directory is scanned above
            for vol in pool.listAllVolumes(0):
                path = vol.path()
                if resolve(path) not in skip and os.path.exists(path):
                    found.append(
                        (f"pool {pool.name()} volume {vol.name()}", _chain_paths(path, resolve))
                    )
    except libvirt.libvirtError as exc:
        raise VshxError(
            f"cannot read the storage pools: {exc.get_error_message()}",
            "vshx refuses what it cannot check; try again, or --force",
        ) from exc
    return found, directories


def refuse_shared(
    session: Session, path: str, ours: Chain, force: bool, doing: str, through: str | None = None
) -> None:
    """Refuse to change a file other chains depend on, unless --force."""
    index = UsageIndex(session, ours)
    users = index.users_of(path, through)
    if not users:
        return
    if force:
        session.warn(f"{doing} {path}, which is also used by: {'; '.join(users)} (--force)")
        return
    raise VshxError(
        f"refusing: {doing} {path} would change what these see: {'; '.join(users)}",
        f"merge those first, or use --force if you are sure ({index.scanned()})",
    )


def refuse_block_job(target: Target) -> None:
    if target.dom is None or not target.live:
        return
    info = virt.block_job_info(target.dom, target.chain.disk or "")
    if info:
        kinds = {1: "pull", 2: "copy", 3: "commit", 4: "active commit", 5: "backup"}
        kind = kinds.get(info.get("type", 0), "block")
        raise VshxError(
            f"a {kind} job is already running on {target.chain.domain} {target.chain.disk} "
            f"({info.get('cur', 0)}/{info.get('end', 0)} bytes)",
            f"wait for it, or abort it: virsh blockjob {target.chain.domain} "
            f"{target.chain.disk} --abort",
        )


def free_bytes(path: str) -> int:
    """Free space for an unprivileged writer in the file system that holds ``path``."""
    stat = os.statvfs(os.path.dirname(path))
    return stat.f_bavail * stat.f_frsize


def refuse_unsafe_start(session: Session, target: Target, args: Args) -> None:
    """What every merge refuses before it plans: offline steps on a remote URI, a bare image
    a running domain uses, a block job already running on the disk."""
    refuse_remote_offline(session, target, session.planning_only(args))
    if target.dom is None and session.is_local:
        refuse_if_running_user(
            session, target.chain.active.path, "name the domain and disk instead of the image"
        )
    refuse_block_job(target)


def refuse_remote_offline(session: Session, target: Target, planning_only: bool) -> None:
    if target.live or planning_only or session.is_local:
        return
    raise VshxError(
        f"offline steps run qemu-img on this machine, but {session.uri} is remote",
        "run vshx on that host, or print the plan with --dry-run and run it there",
    )


def relative_or_absolute(new_backing: Layer, overlay: Layer, keep_relative: bool) -> str:
    """The backing name to write into ``overlay``: relative where the chain used relative names."""
    if keep_relative or overlay.backing_is_relative:
        return os.path.relpath(new_backing.path, os.path.dirname(overlay.path))
    return new_backing.path


def require_format(layer: Layer) -> str:
    if not layer.format:
        raise VshxError(f"unknown format of {layer.path}", "check it with: qemu-img info")
    return layer.format
