"""The backing chain of one disk: ordered layers, and resolution of a user's REF to a layer.

Read from a running domain's live XML (``<backingStore>`` with libvirt's indexes) or from
``qemu-img info --backing-chain --output=json -U`` for a shut-off domain or a bare image.
Layers are listed active first (position 0), base last.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from typing import Any, Literal, NamedTuple

from vshx.errors import UsageError, VshxError
from vshx.spec.render import printable, quoted
from vshx.storage import host as files
from vshx.storage import qemuimg
from vshx.storage.identity import identity

INDEX_REF = re.compile(r"^(?P<disk>[A-Za-z0-9_.-]+)\[(?P<index>\d+)\]$")


JSON_NAME = "json:"  # a backing name QEMU parses as options (a raw slice: offset, size)


def is_json_name(path: str | None) -> bool:
    """A ``json:{...}`` name: QEMU's options for a node, not a file name (qemu-img prints one
    as a layer's name where the options are more than a file: a raw slice's offset/size)."""
    return bool(path) and (path or "").startswith(JSON_NAME)


def canonical(path: str) -> str:
    """A path in the form used for comparing layers (absolute, symlinks resolved); a
    ``json:`` name as it is (it names no file of that name)."""
    return path if is_json_name(path) else files.realpath(path)


def as_opened(path: str) -> str:
    """The file QEMU opens for ``path`` (a name it joined: ``dirname(image) + "/" + backing``),
    written without ``.`` and ``..``: the kernel takes ``..`` in the directory a symlink
    leads to (``link/../x`` with ``link -> real/sub`` is ``real/x``), never by dropping the
    word before it as ``os.path.normpath`` would.  Symlinks are resolved only where a ``..``
    follows them, so the names a user gave stay as they are."""
    if is_json_name(path):
        return path  # QEMU's options for a node (a raw slice): no name relative to anything
    if not os.path.isabs(path):
        path = os.path.join(os.getcwd(), path)
    out = "/"
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            out = os.path.dirname(files.realpath(out))
        else:
            out = os.path.join(out, part)
    return out


def relative_name(target: str, overlay: str) -> str:
    """The relative backing name to write into ``overlay`` so that QEMU opens ``target``.

    QEMU joins the name to the directory of the overlay as it opens it and the kernel
    resolves ``..`` there physically, so the name is computed between the physical
    directories of both ends (a text-only ``relpath`` through a symlinked directory names
    another file).  Checked before it is used: a name that does not reach ``target``
    refuses (nothing is written)."""
    from vshx.storage.identity import identity

    physical = os.path.join(files.realpath(os.path.dirname(target)), os.path.basename(target))
    name = os.path.relpath(physical, files.realpath(os.path.dirname(overlay)))
    opened = os.path.join(os.path.dirname(overlay), name)
    if identity(opened) != identity(target):
        raise VshxError(
            f"no relative backing name written into {overlay} reaches {target} (the name "
            f"{name} opens {as_opened(opened)})",
            "nothing was changed; an absolute name reaches it: without --keep-relative vshx "
            "writes one (a chain whose names are relative keeps them: rebase -u onto the "
            "absolute name first), or move the files so that one directory holds the other",
        )
    return name


def human_size(num: int | None) -> str:
    if num is None:
        return "-"
    value = float(num)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{num} B"


# The records below are NamedTuples, not dataclasses: importing dataclasses and building its
# classes cost a one-shot command ~10 ms of its startup (issue 16).


class Layer(NamedTuple):
    """One image file in a chain."""

    path: str
    format: str
    position: int  # 0 = active
    backing: str | None = None  # backing file name as written in this image's header
    backing_format: str | None = None
    virtual_size: int | None = None
    allocated: int | None = None
    libvirt_index: int | None = None  # libvirt's index (vda[N]); None for offline chains

    @property
    def name(self) -> str:
        """The file's name; a ``json:`` layer (a node QEMU builds from options, e.g. a raw
        slice of a file) is shown whole, as its header names it."""
        return self.path if is_json_name(self.path) else os.path.basename(self.path)

    @property
    def canonical(self) -> str:
        return canonical(self.path)

    @property
    def backing_is_relative(self) -> bool:
        backing = self.backing or ""
        return bool(backing) and not os.path.isabs(backing) and not is_json_name(backing)


class Chain(NamedTuple):
    """An ordered chain, active first; knows which domain/disk it belongs to, if any."""

    layers: list[Layer]
    domain: str | None = None
    disk: str | None = None
    live: bool = False

    @property
    def active(self) -> Layer:
        return self.layers[0]

    @property
    def bottom(self) -> Layer:
        return self.layers[-1]

    def ref_of(self, layer: Layer) -> str:
        disk = self.disk or "image"
        number = layer.libvirt_index if layer.libvirt_index is not None else layer.position + 1
        return f"{disk}[{number}]"

    def above(self, layer: Layer) -> Layer | None:
        """The layer whose backing file is ``layer`` (nearer the active), if any."""
        return self.layers[layer.position - 1] if layer.position > 0 else None

    def below(self, layer: Layer) -> Layer | None:
        pos = layer.position + 1
        return self.layers[pos] if pos < len(self.layers) else None

    def between(self, top: Layer, base: Layer) -> list[Layer]:
        """Layers from top down to (not including) base."""
        return self.layers[top.position : base.position]

    def arrows(self) -> str:
        """The chain in the notation of the docs: base <- sn1 <- ... <- active (active)."""
        names = [layer.name for layer in reversed(self.layers)]
        return " <- ".join(names) + " (active)"

    def without(self, gone: list[Layer]) -> Chain:
        """The chain a merge leaves: these layers out, positions counted again."""
        names = {layer.path for layer in gone}
        kept = [layer for layer in self.layers if layer.path not in names]
        layers = []
        for i, layer in enumerate(kept):
            below = kept[i + 1] if i + 1 < len(kept) else None
            was = self.layers[layer.position + 1] if layer.position + 1 < len(self.layers) else None
            if was is not None and (below is None or below.path != was.path):
                # the merge writes the new backing file into this layer's header
                layer = layer._replace(
                    backing=below.path if below else None,
                    backing_format=below.format if below else None,
                )
            layers.append(layer._replace(position=i))
        return Chain(
            layers,
            self.domain,
            self.disk,
            self.live,
        )

    def listing(self) -> str:
        """A one-line-per-layer description used in error messages."""
        return "; ".join(f"{self.ref_of(layer)}={layer.name}" for layer in self.layers)

    def layer_of_file(self, path: str) -> Layer | None:
        """The layer that is the file ``path`` names, by identity (any name of it: a symlink,
        a hard link), or None."""
        wanted = identity(path)
        return next((layer for layer in self.layers if identity(layer.path) == wanted), None)

    def resolve(self, ref: str) -> Layer:
        """Find a layer by path, name as written in the chain, file stem, or vda[N]."""
        if not ref:
            raise UsageError("an empty layer REF names no layer", f"the chain is: {self.listing()}")
        match = INDEX_REF.match(ref)
        if match and (self.disk is None or match["disk"] == self.disk):
            number = int(match["index"])
            for layer in self.layers:
                index = layer.libvirt_index
                if (index if index is not None else layer.position + 1) == number:
                    return layer
        for layer in self.layers:
            if layer.path == ref:
                return layer
        named: list[Layer] = []  # as written: a layer's backing string names the one below
        for layer in self.layers:
            above = self.above(layer)
            if layer.name == ref or (above is not None and above.backing == ref):
                if layer not in named:
                    named.append(layer)
        if len(named) > 1:  # two files of one name in two directories: never a guess
            raise UsageError(
                f"{quoted(ref)} names {len(named)} layers of this chain: "
                + ", ".join(layer.path for layer in named),
                f"give the layer's full path or its index; the chain is: {self.listing()}",
            )
        if named:
            return named[0]
        stems = [layer for layer in self.layers if os.path.splitext(layer.name)[0] == ref]
        if len(stems) == 1:  # "sn1" for sn1.qcow2, when unambiguous
            return stems[0]
        if "/" in ref or files.exists(ref):
            target = canonical(ref)
            for layer in self.layers:
                if layer.canonical == target:
                    return layer
        which = f" ({self.domain} {self.disk})" if self.domain and self.disk else ""
        raise VshxError(
            f"{quoted(ref)} is not a layer of this chain{which}",
            f"a layer is named by its path, its file name or that name without its extension "
            f"(sn1 for sn1.qcow2), or vda[N], not by a snapshot's name; the chain is: "
            f"{self.listing()}",
        )


def chain_from_info(info: list[dict[str, Any]], top_path: str | None = None) -> list[Layer]:
    """Layers from qemu-img's --backing-chain JSON (top first)."""
    layers = []
    for position, entry in enumerate(info):
        path = entry["filename"]
        if position == 0 and top_path is not None:
            path = top_path
        layers.append(
            Layer(
                path=as_opened(path),
                format=entry.get("format", "raw"),
                position=position,
                backing=entry.get("backing-filename"),
                backing_format=entry.get("backing-filename-format"),
                virtual_size=entry.get("virtual-size"),
                allocated=entry.get("actual-size"),
            )
        )
    return layers


def image_chain(path: str) -> Chain:
    """The chain of a bare image file."""
    if not files.exists(path):
        raise VshxError(
            f"image {quoted(path)} does not exist",
            "a path to an image file, or a domain name with its disk (list --all shows them)",
        )
    absolute = as_opened(path)
    return Chain(chain_from_info(qemuimg.info_chain(absolute), absolute))


class DiskSource(NamedTuple):
    """A disk of a domain as its XML describes it."""

    target: str
    device: str
    source: str | None
    format: str | None
    backing: list[tuple[str, str | None, int | None]]  # (path, format, index) below the source
    libvirt_index: int | None = None
    persistent_only: bool = False  # named by a running domain's persistent definition only
    kind: str = "file"  # the <disk type=...>: file, block, network, volume, dir, nvme...
    remote: str = ""  # a network disk's protocol and name (``nbd x``), for messages
    # <backingStore type=...> of each backing node that is no file or block device (a pool
    # volume, a network image), with what names it: vshx cannot read or merge such a layer
    foreign_backing: tuple[str, ...] = ()
    # its file name holds a line break or tab: this is one of the two files it may name (as
    # QEMU opened it, or as a parser reads it back: chain.readings); a usage scan's reading
    blurred: bool = False


def source_path(node: ET.Element) -> str | None:
    """The local file (type='file') or device (type='block') a disk or backing node reads;
    None for every other type: a network disk's ``name`` is an export, image or volume on
    another server, never a path here."""
    src = node.find("source")
    if src is None:
        return None
    kind = node.get("type", "file")
    if kind == "file":
        return src.get("file")
    if kind == "block":
        return src.get("dev")
    return None


def _remote_source(node: ET.Element) -> str:
    src = node.find("source")
    if node.get("type") != "network" or src is None:
        return ""
    return f"{src.get('protocol', '?')} {src.get('name', '')}".strip()


# An attribute of a <disk> holding a raw line break or tab: libvirt writes a path's newline as
# it is, and every XML parser (libvirt's own, when it reads its files again) reads it as a space
BLURRED = re.compile(r"""=\s*(?:'[^']*[\n\r\t][^']*'|"[^"]*[\n\r\t][^"]*")""")
DISK_ELEMENT = re.compile(r"<disk\b[^>]*/>|<disk\b.*?</disk>", re.S)  # empty, or whole
# a start or empty tag, its quoted attribute values whole (a value may hold a ``>``)
TAG = re.compile(r"""<[A-Za-z_][^<>"']*(?:(?:"[^"]*"|'[^']*')[^<>"']*)*>""")
QUOTED = re.compile(r""""[^"]*"|'[^']*'""")
BLANK = re.compile(r"[\n\r\t]")  # what a parser reads as a space in an attribute value
KEPT = {"\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}  # written so, a parser keeps it


# what a reader of a domain's or a snapshot's XML does with a disk whose file name has a line
# break or tab: "refuse" (the domain vshx works on: refuse_blurred_names), or "both" (another
# domain, read for who else uses a file: count each file it may name, ``readings``)
Blurred = Literal["refuse", "both"]


def blurred_refusal(what: str, name: str) -> VshxError:
    """The refusal of ``what`` (a domain, a snapshot), which names the file ``name`` with a
    line break or tab in it: vshx cannot tell which file libvirt means (fail closed)."""
    return VshxError(
        f"{printable(what)} names a file with a line break or tab in its name "
        f"({printable(name)}): libvirt's XML gives that character back as a space, so vshx "
        "cannot tell which file libvirt means",
        "rename the file to a name without control characters and point the "
        "definition at it (virsh edit), or work on it with virsh and qemu-img directly",
    )


def refuse_blurred_names(xml: str, what: str) -> None:
    """Refuse ``what`` (a domain's or a snapshot's XML) when one of its disks names a file
    with a line break or tab: the parsed name has a space there instead, which may be another
    file (a decoy), so vshx cannot know which file libvirt means (fail closed)."""
    for disk in DISK_ELEMENT.finditer(xml):
        found = BLURRED.search(disk.group(0))
        if found is not None:
            raise blurred_refusal(what, found.group(0).lstrip("= "))


def keep_raw_names(xml: str) -> str:
    """``xml`` with each raw line break, carriage return and tab in an attribute value written
    as a character reference, which a parser keeps: the names as libvirt holds them (the file
    QEMU opened), where a parser reads each raw one as a space (``\\r\\n`` as one)."""

    def kept(value: re.Match[str]) -> str:
        return BLANK.sub(lambda blank: KEPT[blank.group(0)], value.group(0))

    return TAG.sub(lambda tag: QUOTED.sub(kept, tag.group(0)), xml)


def readings(xml: str) -> list[str]:
    """The ways a usage scan reads ``xml`` (another domain's, or a snapshot's): as a parser
    reads it (a raw line break or tab in a name read as a space: the file libvirt opens once it
    reads its XML again), and, where a name holds one, first with it kept (``keep_raw_names``:
    the file QEMU opened).  Either file may be the one meant, so both count as in use."""
    raw = keep_raw_names(xml)
    return [xml] if raw == xml else [raw, xml]


def disks_from_xml(
    xml: str, what: str = "the domain", blurred: Blurred = "refuse"
) -> list[DiskSource]:
    """Every <disk> of a domain XML with its <backingStore> chain (live XML has one).

    A disk whose file name has a line break or tab (``blurred``): "refuse" refuses ``what``
    (``refuse_blurred_names``); "both" lists that disk twice, once with each file it may name
    (``readings``: the exact names first), both marked ``blurred``."""
    if blurred == "refuse":
        refuse_blurred_names(xml, what)
        return _disks(xml, what)
    parsed = [_disks(text, what) for text in readings(xml)]
    if len(parsed) == 1:
        return parsed[0]
    disks: list[DiskSource] = []
    for raw, spaced in zip(parsed[0], parsed[1], strict=True):  # the same elements, in order
        if raw == spaced:
            disks.append(raw)
        else:
            disks += [raw._replace(blurred=True), spaced._replace(blurred=True)]
    return disks


# a domain's prose: text only (its '<' escaped), never a disk; libvirt keeps a control
# character there that XML 1.0 forbids (`virsh desc D $'\x1c'`), which no parser reads
PROSE = re.compile(r"<(description|title)>.*?</\1>", re.S)


def parse_domain(xml: str, what: str = "the domain") -> ET.Element:
    """A domain XML's root; where it cannot be parsed, the same XML without its description
    and title (one such character there must not hide its disks, nor stop every merge on the
    host through the usage scan); else a refusal naming ``what``."""
    try:
        return ET.fromstring(xml)
    except ET.ParseError:
        try:
            return ET.fromstring(PROSE.sub("", xml))
        except ET.ParseError as exc:
            raise VshxError(
                f"cannot read the XML libvirt gives for {what}: {exc}",
                "a character XML 1.0 does not allow (a control character in a name or in its "
                "metadata?) makes it unreadable; vshx refuses what it cannot check",
            ) from None


def well_formed(xml: str) -> bool:
    """Whether ``xml`` parses as it is (``parse_domain`` needed no fallback): libvirt's own
    parser refuses such a definition too when asked to change it (update-device)."""
    try:
        ET.fromstring(xml)
    except ET.ParseError:
        return False
    return True


def _disks(xml: str, what: str = "the domain") -> list[DiskSource]:
    root = parse_domain(xml, what)
    disks = []
    for disk in root.findall("./devices/disk"):
        target = disk.find("target")
        driver = disk.find("driver")
        if target is None:
            continue
        backing: list[tuple[str, str | None, int | None]] = []
        foreign: list[str] = []
        node = disk.find("backingStore")
        while node is not None and node.find("source") is not None:
            if node.get("type", "file") not in ("file", "block"):
                foreign.append(_foreign_name(node))
            fmt = node.find("format")
            idx = node.get("index")
            backing.append(
                (
                    source_path(node) or "",
                    fmt.get("type") if fmt is not None else None,
                    int(idx) if idx is not None else None,
                )
            )
            node = node.find("backingStore")
        src = disk.find("source")
        src_index = src.get("index") if src is not None else None
        disks.append(
            DiskSource(
                target=target.get("dev", ""),
                device=disk.get("device", "disk"),
                source=source_path(disk),
                kind=disk.get("type", "file"),
                remote=_remote_source(disk),
                format=driver.get("type") if driver is not None else None,
                backing=backing,
                libvirt_index=int(src_index) if src_index is not None else None,
                foreign_backing=tuple(foreign),
            )
        )
    return disks


def _foreign_name(node: ET.Element) -> str:
    """A backing node that names no local path, as a message names it (``volume p/v``)."""
    src = node.find("source")
    attrs = src.attrib if src is not None else {}
    kind = node.get("type", "?")
    if kind == "volume":
        return f"volume {attrs.get('pool', '?')}/{attrs.get('volume', '?')}"
    return f"{kind} {attrs.get('protocol', '')} {attrs.get('name', '')}".strip()


def merge_live_indexes(layers: list[Layer], disk: DiskSource) -> list[Layer]:
    """Attach libvirt's indexes from live XML to the layers qemu-img reported."""
    by_path = {canonical(p): idx for p, _fmt, idx in disk.backing}
    if disk.source:
        index = disk.libvirt_index
        by_path[canonical(disk.source)] = index if index is not None else 0
    return [layer._replace(libvirt_index=by_path.get(layer.canonical)) for layer in layers]
