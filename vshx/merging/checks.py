"""Checks as steps: what vshx verifies before it writes, printed so ``sh -e`` stops there too.

vshx refuses a plan whose checks fail before anything runs; a script printed by ``--dry-run``
may run later on a host that changed, so each check is also a Step.  On a real run the check
is done in Python again, just before the steps that depend on it; the printed line is the sh
command that fails in the same case.
"""

from __future__ import annotations

import os
import re
import stat as modes
import struct
from typing import TYPE_CHECKING, NamedTuple

from vshx.errors import VshxError
from vshx.merging import preflight
from vshx.plans.plan import Step, shell_line
from vshx.spec.render import quoted
from vshx.storage import host as files
from vshx.storage import qemuimg
from vshx.storage.chain import Layer, human_size
from vshx.storage.qcow2 import MAGIC, header_names
from vshx.storage.qcow2_growth import DATA_FILE, Growth, growth

if TYPE_CHECKING:
    from collections.abc import Callable

# df --output=avail: one number per line, whatever spaces the file system's name or mount
# point hold (-P's fourth column shifts with them); GNU df, as on every libvirt host
DF = ["df", "--output=avail", "-B1", "--"]
AWK_TEST = "NR == 2 {{ ok = $1 >= {needed} }} END {{ exit !ok }}"
AWK_PASTED = re.compile(re.escape(AWK_TEST.format(needed="NEEDED")).replace("NEEDED", r"(\d+)"))
# a block device's size in bytes, one line, as the kernel gives it in sysfs (the size lseek
# finds at its end).  lsblk, not blockdev: util-linux puts lsblk in /usr/bin, on the PATH of
# every user and of a command run over ssh (Debian's sshd gives /usr/local/bin:/usr/bin:/bin:
# /usr/games), and it opens no device; blockdev is in /usr/sbin and opens the device.  No
# line (not a block device) leaves ok unset: awk exits 1 and sh -e stops, as vshx refuses
LSBLK = ["lsblk", "--bytes", "--nodeps", "--noheadings", "--output", "SIZE", "--"]
AWK_DEVICE = "NR == 1 {{ ok = $1 >= {needed} }} END {{ exit !ok }}"
AWK_DEVICE_PASTED = re.compile(
    re.escape(AWK_DEVICE.format(needed="NEEDED")).replace("NEEDED", r"(\d+)")
)
# df of several directories at once (a qcow2 whose guest data goes to an external data file
# on another file system): line k+1 is the k-th directory's; a line missing (df could not
# look at a directory) leaves NR short and awk exits 1
AWK_EACH = "NR == {line} && $1 < {needed} {{ short = 1 }}"
AWK_ALL = "{tests} END {{ exit short || NR != {lines} }}"
AWK_EACH_PASTED = re.compile(r"NR == (\d+) && \$1 < (\d+) \{ short = 1 \}")
SPACE_HINT = "free some space, or merge fewer layers at a time"
DEVICE_HINT = (
    "nothing was changed; make the device larger (an LVM volume: lvextend), or merge fewer "
    "layers at a time"
)


def qcow2_on_device(path: str, image_format: str = "") -> bool:
    """True when ``path`` is a block device holding a qcow2 (``image_format``, or by its
    header when that is not given): a merge into it grows into the device, not a file system.
    A raw layer on a device is written in place, within the device."""
    try:
        if not modes.S_ISBLK(files.stat(path).st_mode):
            return False
    except (OSError, ValueError):
        return False  # not there yet (a new file): its directory's free space says
    if image_format:
        return image_format == "qcow2"
    try:
        return files.read(path, 4) == MAGIC
    except OSError:
        return True  # a device vshx cannot read: growth() refuses, saying why


def fits(path: str, needed: int, grows_to: int = 0, image_format: str = "") -> bool:
    """Whether ``needed`` bytes may be written into ``path``: free space beside a file, room
    on the block device under a qcow2 on one, room where an external data file's bytes and
    the qcow2's own go (VshxError when that cannot be told)."""
    data = data_file_of(path, image_format)
    if data is not None:
        return shortfall(data_file_room(path, data, needed, grows_to)) is None
    if qcow2_on_device(path, image_format):
        try:
            size = files.device_size(path)
        except OSError as exc:
            raise _no_size(path, exc) from None
        return growth(path, needed, grows_to).highest <= size
    return needed <= preflight.free_bytes(path)


def space_step(beside: str, needed: int, grows_to: int = 0, image_format: str = "") -> Step:
    """Stop unless ``needed`` bytes are free in the file system that holds ``beside``; or,
    when ``beside`` is a qcow2 on a block device, unless the device holds the highest offset
    the image may reach once ``needed`` bytes are written into it (its virtual size growing to
    ``grows_to``): df of /dev says nothing of a device's size.  A qcow2 with an external
    data file: its guest data goes to that file, on its file system (or device), and only
    the metadata to the qcow2's (data_file_step)."""
    data = data_file_of(beside, image_format)
    if data is not None:
        return data_file_step(beside, data, needed, grows_to)
    if qcow2_on_device(beside, image_format):
        return device_step(beside, growth(beside, needed, grows_to))
    directory = os.path.dirname(beside) or "."
    name = os.path.basename(beside)

    def action() -> None:
        try:
            free = preflight.free_bytes(beside)
        except OSError as exc:
            raise VshxError(
                f"cannot check the free space in {directory}: {exc.strerror}",
                "the directory must exist and be readable",
                clean=True,
            ) from None
        if needed > free:
            raise VshxError(
                f"not enough space beside {beside}: {human_size(needed)} needed, "
                f"{human_size(free)} free",
                SPACE_HINT,
                clean=True,
            )

    test = AWK_TEST.format(needed=needed)
    return Step(
        f"check: {human_size(needed)} free beside {name} (else vshx refuses)",
        [*DF, directory],
        action=action,
        changes=False,
        shell=f"{shell_line([*DF, directory])} | {shell_line(['awk', test])}",
    )


def _no_size(device: str, exc: OSError) -> VshxError:
    return VshxError(
        f"cannot read the size of the block device {device}: {exc.strerror}",
        "nothing was changed; the device must exist and be readable",
        clean=True,
    )


def device_step(device: str, grows: Growth | int) -> Step:
    """Stop unless the block device ``device`` is large enough for the qcow2 on it to reach
    ``grows`` (its highest offset; with where its clusters end now, from ``growth``)."""
    highest = grows.highest if isinstance(grows, Growth) else grows
    name = os.path.basename(device)

    def action() -> None:
        try:
            size = files.device_size(device)
        except OSError as exc:
            raise _no_size(device, exc) from None
        if highest > size:
            now = (
                f" (its clusters end at {human_size(grows.end)} now)"
                if isinstance(grows, Growth)
                else ""
            )
            raise VshxError(
                f"not enough room on the block device {device}: the qcow2 on it may reach "
                f"{human_size(highest)} ({highest} bytes) once the merge writes into it{now}, "
                f"and the device holds {human_size(size)} ({size} bytes)",
                DEVICE_HINT,
                clean=True,
            )

    test = AWK_DEVICE.format(needed=highest)
    return Step(
        f"check: the block device {name} holds {human_size(highest)} (else vshx refuses)",
        [*LSBLK, device],
        action=action,
        changes=False,
        shell=f"{shell_line([*LSBLK, device])} | {shell_line(['awk', test])}",
    )


class Room(NamedTuple):
    """One place a merge's bytes go: ``kind`` "df" (free space in the file system of the
    directory ``where``) or "lsblk" (the size of the block device ``where``), ``needed``
    bytes there, and ``what`` goes there (for the messages)."""

    kind: str
    where: str
    needed: int
    what: str


def _unlocated(image: str, why: str) -> VshxError:
    return VshxError(
        f"cannot tell where the external data file of {image} is, so not whether the merge's "
        f"data fits there: {why}",
        "nothing was changed; vshx refuses what it cannot check: give the image an absolute "
        f"data file name that exists (qemu-img amend -o data_file=FILE {image})",
        clean=True,
    )


def data_file_of(path: str, image_format: str = "") -> str | None:
    """The external data file of the qcow2 ``path`` (``qemu-img create -o data_file=``),
    where a merge into it writes the guest data; None when it has none (or is no qcow2, or
    not there yet).  A data file vshx cannot locate (a relative name, which QEMU opens from
    its opener's working directory; none named though the header says there is one; not
    there or not to be looked at; neither a file nor a block device) raises VshxError."""
    if image_format not in ("", "qcow2"):
        return None
    names = header_names(path)  # a header that cannot be read raises
    if names is None:
        return None
    name = names[1]
    if not name:
        try:
            head = files.read(path, 80)
        except OSError as exc:
            raise _unlocated(path, f"its header cannot be read ({exc.strerror})") from None
        version = struct.unpack(">I", head[4:8])[0] if len(head) >= 8 else 0
        if version >= 3 and len(head) >= 80 and struct.unpack(">Q", head[72:80])[0] & DATA_FILE:
            raise _unlocated(path, "its header says it has one but does not name it")
        return None
    if not os.path.isabs(name):
        raise _unlocated(
            path,
            f"its header names it relatively ({quoted(name)}): QEMU opens that from the working "
            "directory of whatever opens the image",
        )
    try:
        mode = files.stat(name).st_mode
    except OSError as exc:
        raise _unlocated(path, f"{name}: {exc.strerror}") from None
    if not (modes.S_ISREG(mode) or modes.S_ISBLK(mode)):
        raise _unlocated(path, f"{name} is neither a file nor a block device")
    return name


def data_file_room(beside: str, data: str, needed: int, grows_to: int = 0) -> list[Room]:
    """Where a merge writing ``needed`` bytes of guest data into the qcow2 ``beside``, whose
    external data file is ``data``, puts them: the data into the data file (a file: on its
    file system; a block device: QEMU writes each cluster at its guest offset, so the device
    must hold the virtual size the image grows to), the L2 tables and refcounts it needs into
    the qcow2 (how far it may grow, from its own tables: qcow2_growth).  Two rooms on one
    file system are one, their bytes added."""
    grown = growth(beside, needed, grows_to)
    metadata = grown.highest - grown.end
    name = os.path.basename(data)
    rooms = []
    if modes.S_ISBLK(files.stat(data).st_mode):
        virtual = max(grows_to, _virtual_size(beside))
        rooms.append(Room("lsblk", data, virtual, f"the external data file {name}"))
    else:
        rooms.append(Room("df", os.path.dirname(data) or "/", needed, f"the data file {name}"))
    if qcow2_on_device(beside, "qcow2"):
        rooms.append(Room("lsblk", beside, grown.highest, f"the metadata of {beside}"))
    else:
        directory = os.path.dirname(beside) or "."
        rooms.append(Room("df", directory, metadata, f"the metadata of {os.path.basename(beside)}"))
    if rooms[0].kind == rooms[1].kind == "df" and _same_fs(rooms[0].where, rooms[1].where):
        both = f"{rooms[0].what} and {rooms[1].what}"
        rooms = [Room("df", rooms[0].where, rooms[0].needed + rooms[1].needed, both)]
    return rooms


def _virtual_size(path: str) -> int:
    head = files.read(path, 32)
    return int(struct.unpack(">Q", head[24:32])[0]) if len(head) >= 32 else 0


def _same_fs(first: str, second: str) -> bool:
    try:
        return files.stat(first).st_dev == files.stat(second).st_dev
    except OSError:
        return False  # each is measured on its own (and says why it cannot be)


def shortfall(rooms: list[Room], image: str = "") -> VshxError | None:
    """Why the bytes do not fit (the place named), None when they do; VshxError raised when
    a place cannot be measured."""
    for room in rooms:
        if room.kind == "lsblk":
            try:
                size = files.device_size(room.where)
            except OSError as exc:
                raise _no_size(room.where, exc) from None
            if room.needed > size:
                return VshxError(
                    f"not enough room on the block device {room.where} for {room.what}"
                    f"{f' of {image}' if image else ''}: it must hold {human_size(room.needed)} "
                    f"({room.needed} bytes), and holds {human_size(size)} ({size} bytes)",
                    DEVICE_HINT,
                    clean=True,
                )
            continue
        try:
            free = files.free_bytes(room.where)
        except OSError as exc:
            raise VshxError(
                f"cannot check the free space in {room.where} (for {room.what}): {exc.strerror}",
                "nothing was changed; the directory must exist and be readable",
                clean=True,
            ) from None
        if room.needed > free:
            return VshxError(
                f"not enough space in the file system of {room.where} for {room.what}"
                f"{f' of {image}' if image else ''}: {human_size(room.needed)} needed, "
                f"{human_size(free)} free",
                f"nothing was changed; {SPACE_HINT} (the merge writes {image or 'the image'}'s "
                "guest data into its external data file, on that file system)",
                clean=True,
            )
    return None


def data_file_step(beside: str, data: str, needed: int, grows_to: int = 0) -> Step:
    """Stop unless the merge's bytes fit where they go for a qcow2 ``beside`` with the
    external data file ``data``: the data on the data file's file system (or device), the
    metadata on the qcow2's.  Printed as one ``df`` of every directory with one ``awk``
    (a line per directory, each against its need), or, with a block device among them, a
    subshell of the checks joined by ``&&`` (sh -e stops on the subshell's failure)."""
    rooms = data_file_room(beside, data, needed, grows_to)

    def action() -> None:
        found = shortfall(rooms, beside)
        if found is not None:
            raise found

    said = " and ".join(
        f"{human_size(r.needed)} for {r.what} "
        + (f"on the block device {r.where}" if r.kind == "lsblk" else f"free in {r.where}")
        for r in rooms
    )
    description = f"check: {said} (else vshx refuses)"
    if all(r.kind == "df" for r in rooms):
        argv = [*DF, *(r.where for r in rooms)]
        return Step(
            description,
            argv,
            action=action,
            changes=False,
            shell=f"{shell_line(argv)} | {shell_line(['awk', _awk_each(rooms)])}",
        )
    lines = []
    for r in rooms:
        if r.kind == "df":
            test = AWK_TEST.format(needed=r.needed)
            lines.append(f"{shell_line([*DF, r.where])} | {shell_line(['awk', test])}")
        else:
            test = AWK_DEVICE.format(needed=r.needed)
            lines.append(f"{shell_line([*LSBLK, r.where])} | {shell_line(['awk', test])}")
    argv = [*LSBLK, rooms[0].where] if rooms[0].kind == "lsblk" else [*DF, rooms[0].where]
    return Step(description, argv, action=action, changes=False, shell=f"({' && '.join(lines)})")


def _awk_each(rooms: list[Room]) -> str:
    tests = " ".join(
        AWK_EACH.format(line=number + 2, needed=room.needed) for number, room in enumerate(rooms)
    )
    return AWK_ALL.format(tests=tests, lines=len(rooms) + 1)


def room_for(
    destination: Layer,
    layers: list[Layer],
    at_least: int = 0,
    claimed: dict[object, int] | None = None,
) -> Step:
    """Refuse now unless the bytes that may move (allocated in ``layers``, or ``at_least``
    when that is more) fit beside ``destination`` (on its device, for a qcow2 on a block
    device); the same check as a step for the plan.  ``claimed``: what the plan's earlier
    merges write, per file system (a plan over several disks, nu13 #9): a merge into the same
    file system needs its own bytes on top of theirs, and adds them."""
    allocated = sum(layer.allocated or 0 for layer in layers)
    grows_to = max((layer.virtual_size or 0 for layer in layers), default=0)
    needed = max(allocated, at_least)
    key = _file_system(destination) if claimed is not None else None
    earlier = claimed.get(key, 0) if claimed is not None and key is not None else 0
    step = space_step(destination.path, needed + earlier, grows_to, destination.format)
    if claimed is not None and key is not None:
        claimed[key] = earlier + needed
        if earlier:
            step.description = step.description.replace(
                " (else", f" (with the {human_size(earlier)} merged beside it before; else", 1
            )
    step.run()
    return step


def _file_system(destination: Layer) -> object | None:
    """The file system a plain file's merge writes into (its directory's device), for
    ``room_for``'s sums; None where the space is checked otherwise (a qcow2 on a block device,
    an external data file) or cannot be told."""
    if data_file_of(destination.path, destination.format) is not None:
        return None
    if qcow2_on_device(destination.path, destination.format):
        return None
    try:
        return files.stat(os.path.dirname(destination.path) or ".").st_dev
    except (OSError, VshxError):
        return None


def absent_step(path: str) -> Step:
    """Stop if ``path`` exists: vshx never writes over a file it did not make."""

    def action() -> None:
        if files.lexists(path):
            raise VshxError(
                f"{path} exists: vshx does not write over it",
                "name a new file, or remove that one yourself",
                clean=True,
            )

    return Step(
        f"check: {os.path.basename(path)} does not exist yet",  # nor as a dangling link
        ["test", "!", "-e", path, "-a", "!", "-L", path],  # path is absolute: no operator
        action=action,
        changes=False,
    )


def new_file_step(
    description: str,
    argv: list[str],
    path: str,
    underneath: list[str] | None = None,
    made: Callable[[str], None] | None = None,
) -> Step:
    """``argv`` (a ``qemu-img create`` or ``convert`` writing ``path``) as a step that never
    writes over a file.  ``made(path)`` is called once vshx has made the file, before qemu-img
    writes into it (the same inode): the file is this run's own then (snapshot-revert records
    it, and removes it again if the plan stops before a definition names it; after a kill,
    recover does: the step's ``creates``).

    qemu-img truncates a file of that name if there is one, and an ``absent_step`` just before
    still leaves a moment between its look and the create.  So the real run first makes
    ``path`` itself, empty, with ``O_CREAT|O_EXCL`` on the image host: a name taken since the
    plan (a dangling link too) is refused with nothing changed, and qemu-img then writes only
    into the file this step made (removed again if qemu-img fails).  Printed, it is ``argv``.
    """

    def action() -> None:
        try:
            files.create_new(path)
        except FileExistsError:
            raise VshxError(
                f"{path} exists: vshx does not write over it",
                "nothing was changed; run the command again (it plans another name)",
                clean=True,
            ) from None
        except OSError as exc:
            raise VshxError(
                f"cannot create {path}: {exc.strerror}",
                "nothing was changed; the directory must exist and be writable",
                clean=True,
            ) from None
        ours = files.stat(path, follow=False)
        try:
            if made is not None:  # recorded before qemu-img writes it: a kill meanwhile
                made(path)  # leaves a file recover can prove is vshx's (the same inode)
            qemuimg.run(argv)
        except BaseException:
            _remove_if_made(path, ours)
            raise

    step = Step(description, argv, action=action, underneath=underneath)
    if made is not None:  # recorded as vshx's: recover may remove it after a kill
        step.creates = path
    return step


def _remove_if_made(path: str, made: os.stat_result) -> None:
    """Remove the file a failed ``new_file_step`` made, if ``path`` is still that very file."""
    try:
        now = files.stat(path, follow=False)
        if (now.st_dev, now.st_ino) == (made.st_dev, made.st_ino):
            files.unlink(path)
    except OSError:
        pass  # gone or unreadable: the step's own error is what the user needs


def pasted(words: list[str]) -> Step | None:
    """A check line vshx printed, pasted back into vshx: the same check, or None if the words
    are not exactly one (vshx runs no other df, lsblk or test)."""
    if len(words) == 8 and words[:4] == DF and words[5:7] == ["|", "awk"]:
        match = AWK_PASTED.fullmatch(words[7])
        if match:
            return space_step(os.path.join(words[4], ""), int(match.group(1)))
    if len(words) >= 8 and words[:4] == DF and words[-3:-1] == ["|", "awk"]:
        return _pasted_each(words[4:-3], words[-1])
    if len(words) == 11 and words[:7] == LSBLK and words[8:10] == ["|", "awk"]:
        match = AWK_DEVICE_PASTED.fullmatch(words[10])
        if match:
            return device_step(words[7], int(match.group(1)))
    if (
        len(words) == 8
        and words[:3] == ["test", "!", "-e"]
        and words[4:7] == ["-a", "!", "-L"]
        and words[3] == words[7]
    ):
        return absent_step(words[3])
    return None


def _pasted_each(directories: list[str], program: str) -> Step | None:
    """A data file's check of several directories (data_file_step), pasted back: the same
    check, or None when the program is not exactly the one vshx prints for them."""
    needs = [int(n) for _line, n in AWK_EACH_PASTED.findall(program)]
    if len(needs) != len(directories):
        return None
    what = "what the merge writes there"
    rooms = [Room("df", d, n, what) for d, n in zip(directories, needs, strict=True)]
    if _awk_each(rooms) != program:
        return None

    def action() -> None:
        short = shortfall(rooms)
        if short is not None:
            raise short

    argv = [*DF, *directories]
    return Step(
        f"check: free space in {', '.join(directories)} (else vshx refuses)",
        argv,
        action=action,
        changes=False,
        shell=f"{shell_line(argv)} | {shell_line(['awk', program])}",
    )
