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
from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.merging import preflight
from vshx.plans.plan import Step, shell_line
from vshx.storage import host as files
from vshx.storage import qemuimg
from vshx.storage.chain import Layer, human_size
from vshx.storage.qcow2 import MAGIC
from vshx.storage.qcow2_growth import Growth, growth

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
    on the block device under a qcow2 on one (VshxError when that cannot be told)."""
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
    ``grows_to``): df of /dev says nothing of a device's size."""
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


def room_for(destination: Layer, layers: list[Layer], at_least: int = 0) -> Step:
    """Refuse now unless the bytes that may move (allocated in ``layers``, or ``at_least``
    when that is more) fit beside ``destination`` (on its device, for a qcow2 on a block
    device); the same check as a step for the plan."""
    allocated = sum(layer.allocated or 0 for layer in layers)
    grows_to = max((layer.virtual_size or 0 for layer in layers), default=0)
    needed = max(allocated, at_least)
    step = space_step(destination.path, needed, grows_to, destination.format)
    step.run()
    return step


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
    writes over a file.  ``made(path)`` is called once qemu-img has written it: the file is
    this run's own then (snapshot-revert records it, and removes it again if the plan stops
    before a definition names it).

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
            qemuimg.run(argv)
        except BaseException:
            _remove_if_made(path, ours)
            raise
        if made is not None:
            made(path)

    return Step(description, argv, action=action, underneath=underneath)


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
