"""What counts as a disk image path: one suffix list and one test, shared by all."""

from __future__ import annotations

import os

IMAGE_SUFFIXES = (".qcow2", ".qcow", ".img", ".raw", ".iso", ".qed", ".vmdk", ".vdi")


def has_image_suffix(name: str) -> bool:
    return name.endswith(IMAGE_SUFFIXES)


def names_an_image(word: str) -> bool:
    """True when a DOMAIN-or-IMAGE word means a file: it has a slash, or is an image file here.

    Domain names may not contain '/', so a slash always means a path.
    """
    return os.path.sep in word or (has_image_suffix(word) and os.path.isfile(word))
