"""recover after a safe ``qemu-img rebase`` that was killed after its header switch.

A safe rebase copies what the old backing shows the image into it, then writes the new backing
name into the header; QEMU 7.2 writes the tables of the copied clusters only when it closes the
image.  Killed in between (vshx killed and its qemu-img after it, the OOM killer, a crash), the
header names the new backing while the copy is not in the file: the guest sees other data.
The header alone proves nothing, so recover compares: where the image holds no data of its
own, do the old and the new backing show the same (merging/verify.py, the proof of ``rebase
-u``)?  If so the copy reached the file.  If not, the old backing (still there: a plan deletes
files only after its merges) is put back as a pointer, which shows exactly what the image
showed before (what the copy did put in the file is what the old backing showed there), and
the rebase is run again.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.merging import verify
from vshx.plans.journal import clear_argv
from vshx.plans.plan import Step, shell_line
from vshx.storage import host as files
from vshx.storage.chain import as_opened, canonical, image_chain

if TYPE_CHECKING:
    from vshx.plans.journal import Entry
    from vshx.plans.target import Target


def recover_steps(target: Target, entry: Entry) -> list[Step]:
    """The steps that put back and redo an interrupted safe rebase whose copy did not reach
    the image (none when the image shows what it showed: the header was not switched yet,
    or the copy is in the file); VshxError when vshx cannot prove either (the old backing is
    gone, or the header names a third file)."""
    text = entry.get("rebase")
    if not text or entry.copied:
        return []
    try:
        saved = json.loads(str(text))
        image, fmt = str(saved["image"]), str(saved["format"])
        old, old_fmt = str(saved["old"]), str(saved["old_format"])
        new, new_fmt = str(saved["new"]), str(saved["new_format"])
    except (ValueError, TypeError, KeyError):
        return []  # not a record this vshx wrote: the leak repair and the checks that follow
    if not files.lexists(image):
        return []
    chain = image_chain(image)
    now = chain.layers[1].path if len(chain.layers) > 1 else ""
    wanted = as_opened(os.path.join(os.path.dirname(image), new)) if new else ""
    if canonical(now or "") == canonical(old or ""):
        return []  # killed before the header switch: its own clusters over the old backing
    disk = [target.chain.disk] if target.chain.disk else []
    where = shell_line([target.chain.domain or image, *disk])
    if canonical(now or "") != canonical(wanted or ""):
        raise VshxError(
            f"{image} names {now or 'no backing file'}, neither its backing before the "
            f"interrupted rebase ({old or 'none'}) nor the one it was given ({new or 'none'}): "
            "vshx cannot tell what it shows",
            f"nothing was changed; compare it with its old chain (qemu-img compare), then clear "
            f"the journal with vshx recover {where} once it is right",
        )
    if old and not files.exists(old):
        raise VshxError(
            f"the rebase of {image} was interrupted after its header named "
            f"{new or 'no backing file'}, and its old backing {old} is gone: vshx cannot "
            "prove that the copy reached the file",
            f"nothing was changed; put {old} back (from a backup) and run vshx recover {where} "
            f"again; to take {os.path.basename(image)} as it is, clear the journal by hand: "
            + shell_line(clear_argv(target)),
        )
    offset = verify.first_visible_difference(
        chain.layers[0], old or None, old_fmt or None, wanted or None, new_fmt or None
    )
    if offset is None:
        return []  # the copy reached the file: the rebase is complete
    name = os.path.basename(image)
    back = ["qemu-img", "rebase", "-u", "-f", fmt]
    back += ["-F", old_fmt, "-b", old] if old else ["-b", ""]
    again = ["qemu-img", "rebase", "-f", fmt, *(["-F", new_fmt] if new else []), "-b", new]
    return [
        Step(
            f"point {name} at {os.path.basename(old) if old else 'no backing file'} again: "
            f"the interrupted rebase named {os.path.basename(new) if new else 'no backing'} "
            f"before the data it copied reached {name} (it differs from offset {offset})",
            [*back, image],
        ),
        Step(f"copy what {name} needs and point it at {new or 'nothing'} again", [*again, image]),
    ]
