"""Checks as steps: what vshx verifies before it writes, printed so ``sh -e`` stops there too.

vshx refuses a plan whose checks fail before anything runs; a script printed by ``--dry-run``
may run later on a host that changed, so each check is also a Step.  On a real run the check
is done in Python again, just before the steps that depend on it; the printed line is the sh
command that fails in the same case.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.merging import preflight
from vshx.plans.plan import Step, shell_line
from vshx.storage import host as files
from vshx.storage import qemuimg
from vshx.storage.chain import Layer, human_size

if TYPE_CHECKING:
    from collections.abc import Callable

# df --output=avail: one number per line, whatever spaces the file system's name or mount
# point hold (-P's fourth column shifts with them); GNU df, as on every libvirt host
DF = ["df", "--output=avail", "-B1", "--"]
AWK_TEST = "NR == 2 {{ ok = $1 >= {needed} }} END {{ exit !ok }}"
AWK_PASTED = re.compile(re.escape(AWK_TEST.format(needed="NEEDED")).replace("NEEDED", r"(\d+)"))


def space_step(beside: str, needed: int) -> Step:
    """Stop unless ``needed`` bytes are free in the file system that holds ``beside``."""
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
                "free some space, or merge fewer layers at a time",
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


def room_for(destination: Layer, layers: list[Layer], at_least: int = 0) -> Step:
    """Refuse now unless the bytes that may move (allocated in ``layers``, or ``at_least``
    when that is more) fit beside ``destination``; the same check as a step for the plan."""
    allocated = sum(layer.allocated or 0 for layer in layers)
    step = space_step(destination.path, max(allocated, at_least))
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
    are not exactly one (vshx runs no other df or test)."""
    if len(words) == 8 and words[:4] == DF and words[5:7] == ["|", "awk"]:
        match = AWK_PASTED.fullmatch(words[7])
        if match:
            return space_step(os.path.join(words[4], ""), int(match.group(1)))
    if (
        len(words) == 8
        and words[:3] == ["test", "!", "-e"]
        and words[4:7] == ["-a", "!", "-L"]
        and words[3] == words[7]
    ):
        return absent_step(words[3])
    return None
