"""Image formats other than qcow2 whose files name other files (a backing or parent file).

qcow2 headers vshx reads itself (storage/qcow2.py); QED, VMDK (binary sparse, COWD, or a text
descriptor) name their backing or parent files in ways vshx does not parse: a file of one of
them is asked with ``qemu-img info`` where its names matter (the usage scan), and never read
unasked.  qcow version 1 shares qcow2's magic and is told by its version field.
"""

from __future__ import annotations

NAMING_MAGIC = (b"QED\0", b"KDMV", b"COWD", b"# Disk Descriptor")


def names_other_files(head: bytes) -> bool:
    """A file whose first bytes (at least 1 KiB when the file has them) are a QED or VMDK
    image's, which may name a backing or parent file."""
    return head.startswith(NAMING_MAGIC) or b"createType" in head[:1024]
