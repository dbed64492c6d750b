"""Persistent dirty bitmaps in qcow2 layers, and the libvirt checkpoints that own them.

libvirt names a checkpoint's bitmap after the checkpoint and, at each external snapshot,
re-creates every recording bitmap in the new overlay; a backup from checkpoint C merges the
bitmap C of every layer, top down, as long as the layers holding it are contiguous.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from vshx.errors import VshxError
from vshx.storage import host as files
from vshx.storage import qcow2, qemuimg
from vshx.storage.chain import Layer
from vshx.storage.libvirt_lazy import libvirt


@dataclass(frozen=True)
class Bitmap:
    """One persistent bitmap of one image, as ``qemu-img info`` lists it."""

    name: str
    granularity: int
    flags: tuple[str, ...] = ()

    @property
    def recording(self) -> bool:
        """``auto``: it records the guest's writes (libvirt needs that for a backup)."""
        return "auto" in self.flags

    @property
    def in_use(self) -> bool:
        """``in-use`` on a file no QEMU has open: inconsistent, its content is unknown."""
        return "in-use" in self.flags


@dataclass(frozen=True)
class LayerBitmaps:
    """The bitmaps of one layer, and whether its format can hold any."""

    layer: Layer
    bitmaps: tuple[Bitmap, ...]
    can_hold: bool  # qcow2 v3 (compat 1.1); raw and compat 0.10 hold none

    def get(self, name: str) -> Bitmap | None:
        return next((b for b in self.bitmaps if b.name == name), None)


def read_layer(layer: Layer) -> LayerBitmaps:
    """The persistent bitmaps of a layer: the qcow2 header says "none" in microseconds;
    otherwise ``qemu-img info -U``.  Raises when the file cannot be read (fail closed)."""
    if layer.format == "qcow2" and not qcow2.may_hold_bitmaps(layer.path):
        return LayerBitmaps(layer, (), _v3(layer))
    if layer.format != "qcow2":
        return LayerBitmaps(layer, (), False)
    data = qemuimg.info(layer.path).get("format-specific", {}).get("data", {})
    found = tuple(
        Bitmap(str(b["name"]), int(b["granularity"]), tuple(b.get("flags", ())))
        for b in data.get("bitmaps", ())
    )
    return LayerBitmaps(layer, found, data.get("compat") != "0.10")


def _v3(layer: Layer) -> bool:
    """A qcow2 header of version 3 (compat 1.1), which can hold bitmaps."""
    try:
        head = files.read(layer.path, 8)
    except OSError as exc:
        raise VshxError(f"cannot read {layer.path}: {exc.strerror}") from exc
    return head[:4] == qcow2.MAGIC and head[4:8] == b"\0\0\0\3"


def checkpoints_by_bitmap(dom: libvirt.virDomain | None, disk: str) -> dict[str, list[str]]:
    """For each bitmap name on ``disk``, the libvirt checkpoints of ``dom`` that use it."""
    if dom is None:
        return {}
    try:
        checkpoints = dom.listAllCheckpoints(0)
    except libvirt.libvirtError as exc:
        raise VshxError(
            f"cannot list the checkpoints of {dom.name()}: {exc.get_error_message()}",
            "an offline merge must know them to keep incremental backups working",
        ) from exc
    found: dict[str, list[str]] = {}
    for checkpoint in checkpoints:
        root = ET.fromstring(checkpoint.getXMLDesc(libvirt.VIR_DOMAIN_CHECKPOINT_XML_NO_DOMAIN))
        for node in root.findall("./disks/disk"):
            if node.get("name") == disk and node.get("checkpoint", "bitmap") == "bitmap":
                bitmap = node.get("bitmap") or checkpoint.getName()
                found.setdefault(bitmap, []).append(checkpoint.getName())
    return found
