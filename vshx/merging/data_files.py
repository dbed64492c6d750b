"""A merged-away layer's external data file: removed with the layer only when nothing else
reaches it, else kept and named.

A qcow2 image made with ``-o data_file=FILE`` keeps its guest clusters in FILE and only its
metadata in the image; the header names FILE (libvirt 9.0 knows nothing of it: no
``<dataStore>``, QEMU opens the name it reads).  Deleting the layer alone leaves FILE behind,
as large as what the layer held, named by nothing (libvirt 9.0's ``snapshot-delete`` does just
that).  So a plan that deletes a layer also deletes its data file, as its own ``rm -f --`` line
right after the layer's, but only a file vshx can name for sure that nothing else reaches:

- an absolute name (QEMU 7.2 opens a relative one from the opener's working directory: which
  file that is depends on who opens it), a regular file (never a device), one name (a hard
  link is another name something outside the scan may use);
- no other chain reaches it (the usage scan: other domains' disks and snapshots, images in
  the scanned directories, pool volumes, by identity), nor a layer of this chain that stays,
  nor this domain's disks, definitions or snapshots (outside the files deleted with it).

Each is looked at again right before the unlink; a kept file is named in the plan and in a
warning.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Container
from dataclasses import dataclass
from stat import S_ISLNK, S_ISREG
from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.merging import preflight
from vshx.plans.plan import Step
from vshx.spec.render import quoted
from vshx.storage import host as files
from vshx.storage import virt
from vshx.storage.chain import Chain, Layer, canonical, human_size
from vshx.storage.identity import FileKey, identity

if TYPE_CHECKING:
    from vshx.plans.context import Context as Session
    from vshx.storage.libvirt_lazy import libvirt


@dataclass(frozen=True)
class DataFile:
    """The external data file a merged-away layer's header names, as vshx will delete it."""

    layer: str  # the layer whose header names it
    path: str  # absolute, as the header names it
    key: FileKey  # its identity when planned: the unlink removes only that file


def named_data_file(layer: str) -> tuple[DataFile | None, str]:
    """The data file to delete with ``layer`` (None when there is none to delete), and why a
    data file the header names is kept ("" when none is)."""
    from vshx.storage.qcow2 import header_names

    names = header_names(layer)
    name = names[1] if names else None
    if not name:
        return None, ""
    if not os.path.isabs(name):
        return None, (
            f"its header names it relatively ({quoted(name)}): QEMU opens that from the working "
            "directory of whatever opens the image, so vshx cannot tell which file it is"
        )
    try:
        link = files.stat(name, follow=False)
    except (FileNotFoundError, NotADirectoryError):
        return None, ""  # not there: nothing to delete
    except OSError as exc:
        return None, f"it cannot be looked at ({exc.strerror})"
    why = _unsure(link)
    return (None, why) if why else (DataFile(layer, name, identity(name)), "")


def _unsure(found: os.stat_result) -> str:
    """Why a data file is not one vshx deletes: a symlink, not a regular file, more names."""
    if S_ISLNK(found.st_mode):
        return "it is a symbolic link (rm would remove the link, not the data)"
    if not S_ISREG(found.st_mode):
        return "it is not a regular file (vshx removes no device)"
    if found.st_nlink > 1:
        return f"it has {found.st_nlink} names (hard links): another name may be in use"
    return ""


def own_users(session: Session, data: DataFile, chain: Chain, going: Container[str]) -> list[str]:
    """What of this chain's own domain reaches the data file, the files deleted with it
    (``going``, canonical paths) left out: a layer of the chain that stays, a disk or a
    definition of the domain, a file one of its snapshots names.  The usage scan passes all
    of these over (they are the plan's own), so they are looked at here."""
    from vshx.storage.qcow2 import image_files

    named = [(f"layer {layer.path} of this chain", layer.path) for layer in chain.layers]
    dom = virt.lookup_domain(session.conn, chain.domain) if chain.domain else None
    if dom is not None:
        named += _domain_files(dom)
    found = []
    for label, path in named:
        if canonical(path) in going:
            continue
        if any(identity(f) == data.key for f in image_files(path)):
            found.append(label)
    return list(dict.fromkeys(found))


def _domain_files(dom: libvirt.virDomain) -> list[tuple[str, str]]:
    """(label, path) for every file a domain uses or names: each disk's chain as it is now,
    its persistent and live definitions, and what its snapshots name."""
    from vshx.storage.definition import named_files
    from vshx.storage.snapshot_refs import snapshot_files
    from vshx.storage.snapshots import current_chain_files

    name = dom.name()
    found = [(f"a disk of domain {name}", p) for p in sorted(current_chain_files(dom))]
    found += [(f"the definition of domain {name}", p) for p in sorted(named_files(dom))]
    for handle in dom.listAllSnapshots(0):
        for what, path in snapshot_files(handle.getXMLDesc(0)):
            found.append((f"domain {name} snapshot {handle.getName()} ({what})", path))
    return found


def users(
    session: Session,
    data: DataFile,
    chain: Chain,
    going: set[str],
    index: preflight.UsageIndex | None = None,
) -> list[str]:
    """Everything but the files deleted with it that reaches the data file: the usage scan
    (``index``: the plan's own; None: read again, as right before the unlink) and the chain's
    own domain.  A scan that cannot read something raises (fail closed)."""
    if index is None:
        # the layer is gone by now: the data file is one of the plan's files, as it was when
        # planned (a directory pool lists it as a volume, which is no user of it)
        ours = Chain([*chain.layers, Layer(data.path, "raw", -1)], chain.domain, chain.disk)
        index = preflight.UsageIndex(session, ours, going=going | {data.layer})
    going_canonical = {canonical(p) for p in going | {data.layer}}
    found = index.users_of(data.path) + own_users(session, data, chain, going_canonical)
    return list(dict.fromkeys(found))


def delete_step(session: Session, data: DataFile, chain: Chain, going: set[str]) -> Step:
    """The rm of a merged-away layer's data file, looked at again right before the unlink."""
    layer = os.path.basename(data.layer)
    size = human_size(files.stat(data.path).st_blocks * 512)
    return Step(
        f"delete {os.path.basename(data.path)}, the external data file of merged-away "
        f"{layer} ({size}; nothing else reaches it)",
        ["rm", "-f", "--", data.path],
        action=_after_looking_again(session, data, chain, set(going)),
    )


def _after_looking_again(
    session: Session, data: DataFile, chain: Chain, going: set[str]
) -> Callable[[], None]:
    def action() -> None:
        if not files.lexists(data.path):
            return  # gone already: as rm -f
        why = ""
        if identity(data.path) != data.key:
            why = "another file is there now"
        else:
            why = _unsure(files.stat(data.path, follow=False))
        if not why:
            found = users(session, data, chain, going)
            why = f"still used by {'; '.join(found)}" if found else ""
        if why:
            raise VshxError(
                f"not deleting {data.path} (the external data file of merged-away "
                f"{os.path.basename(data.layer)}): {why}",
                "nothing was deleted after the layer itself; look at that file",
                clean=True,
            )
        session.info(f"deleting {data.path}, the external data file of merged-away {data.layer}")
        try:
            files.unlink(data.path)
        except FileNotFoundError:
            pass

    return action
