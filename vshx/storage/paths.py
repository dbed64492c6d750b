"""What counts as a disk image path: one suffix list and one test, shared by all."""

from __future__ import annotations

import os

from vshx.errors import UsageError
from vshx.spec.render import quoted

IMAGE_SUFFIXES = (".qcow2", ".qcow", ".img", ".raw", ".iso", ".qed", ".vmdk", ".vdi")


def has_image_suffix(name: str) -> bool:
    return name.endswith(IMAGE_SUFFIXES)


def names_an_image(word: str) -> bool:
    """True when a DOMAIN-or-IMAGE word means a file: it has a slash, or is an image file here.

    Domain names may not contain '/', so a slash always means a path.
    """
    return os.path.sep in word or (has_image_suffix(word) and os.path.isfile(word))


def refuse_unfit_for_xml(path: str, option: str) -> None:
    """A path vshx is to write into libvirt's XML (a new file, a lab's directory): refused
    before anything is made when libvirt cannot keep it as given: a control character
    (libvirt's XML gives a line break back as a space) or a byte that is not UTF-8 (libvirt's
    strings are UTF-8 only)."""
    bad = next((c for c in path if ord(c) < 32 or ord(c) == 127), None)
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        bad = bad or "a byte that is not UTF-8"
    if bad is not None:
        what = bad if len(bad) > 1 else f"the control character {ord(bad):#04x}"
        raise UsageError(
            f"{option} {quoted(path)} holds {what}: libvirt's XML cannot keep that name as it is",
            f"give {option} a name without it; nothing was changed",
        )
