"""A disk as the domain's definitions name it, compared with the chain its qcow2 headers form.

libvirt starts a domain on its persistent definition: when a ``<disk>`` carries a
``<backingStore>`` chain (snapshots taken on a running domain leave one), QEMU opens exactly
those files, whatever the headers say; only below the last one named does libvirt read the
headers.  A live definition is what QEMU runs on now.
"""

from __future__ import annotations

import os
import shlex
import stat
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, NamedTuple

from vshx.errors import VshxError
from vshx.storage import host as files
from vshx.storage.chain import canonical, parse_domain, source_path
from vshx.storage.libvirt_lazy import libvirt
from vshx.storage.xml_text import xml_text

if TYPE_CHECKING:
    from vshx.storage.chain import Chain


class Defined(NamedTuple):
    """One disk as a definition names it: its source and the backing files it pins."""

    target: str
    source: str | None
    format: str | None
    backing: tuple[tuple[str, str | None], ...]  # (path, format) below the source, top first
    pinned: bool  # a <backingStore> with a source: libvirt opens these, it does not probe
    closed: bool  # ends in an empty <backingStore/>: nothing below the last one named

    @property
    def files(self) -> list[str]:
        """The source and every pinned backing file, top first."""
        return [self.source or ""] + [path for path, _fmt in self.backing]


def _format(node: ET.Element, tag: str) -> str | None:
    found = node.find(tag)
    return found.get("type") if found is not None else None


def parse(xml: str) -> list[Defined]:
    """Every ``<disk>`` of a domain XML with the backing chain it pins."""
    found = []
    for disk in parse_domain(xml).findall("./devices/disk"):
        target = disk.find("target")
        if target is None:
            continue
        backing: list[tuple[str, str | None]] = []
        closed = False
        node = disk.find("backingStore")
        while node is not None:
            path = source_path(node)
            if path is None:
                closed = True  # <backingStore/>: the chain ends here
                break
            backing.append((path, _format(node, "format")))
            node = node.find("backingStore")
        found.append(
            Defined(
                target.get("dev", ""),
                source_path(disk),
                _format(disk, "driver"),
                tuple(backing),
                bool(backing),
                closed,
            )
        )
    return found


def find(xml: str, target: str) -> Defined | None:
    for disk in parse(xml):
        if target in (disk.target, disk.source):
            return disk
    return None


def persistent_xml(dom: libvirt.virDomain) -> str:
    return str(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))


def difference(defined: Defined, chain: Chain, *, files_must_exist: bool) -> str | None:
    """What differs between the chain a definition pins and the one the headers form, or None.

    An unpinned definition agrees (libvirt reads the headers), but for an empty
    ``<backingStore/>`` under the source, which agrees only with a header that names no
    backing file (libvirt opens the disk with none); a pinned one agrees when every
    file it names is the header chain's file at that place (by canonical path), and, when it
    is closed, the headers end there too.
    """
    headers = [layer.canonical for layer in chain.layers]
    if defined.source and canonical(defined.source) != headers[0]:
        return f"it names {defined.source} as the disk, the chain starts at {chain.active.path}"
    if not defined.pinned and not defined.closed:
        return None
    if not defined.pinned:  # an empty <backingStore/>: libvirt opens no backing file
        if len(headers) == 1:
            return None
        return (
            f"an empty <backingStore/> opens {chain.active.name} with no backing file (the "
            f"guest reads zeros where it holds no data), its header names {chain.layers[1].path}"
        )
    named = defined.files
    for number, path in enumerate(named):
        if files_must_exist and not files.exists(path):
            return f"it names {path}, which does not exist"
        if number >= len(headers):
            return (
                f"it names {path} below {os.path.basename(named[number - 1])}, whose header "
                "names no backing file"
            )
        if canonical(path) != headers[number]:
            above = chain.layers[number - 1]
            return (
                f"it names {path} below {above.name}, whose header names "
                f"{chain.layers[number].path}"
            )
        fmt = defined.format if number == 0 else defined.backing[number - 1][1]
        if fmt and chain.layers[number].format and fmt != chain.layers[number].format:
            return f"it opens {path} as {fmt}, the file is {chain.layers[number].format}"
    if defined.closed and len(headers) > len(named):
        return (
            f"it ends at {os.path.basename(named[-1])}, whose header names "
            f"{chain.layers[len(named)].path}"
        )
    return None


def check(dom: libvirt.virDomain, chain: Chain, live: bool, live_xml: str | None = None) -> None:
    """Refuse a chain whose definition (live when running, else persistent) names other files.

    The persistent definition is what the domain will start on; the live one is what QEMU
    runs on.  Either disagreeing with the headers leaves vshx not knowing which chain a plan
    would change, so it refuses (fail closed) and says how to bring them in line.
    ``live_xml``: the running domain's live definition, read by the caller for this chain.
    """
    if live:
        xml = dom.XMLDesc(0) if live_xml is None else live_xml
    else:
        xml = persistent_xml(dom)
    defined = find(xml, chain.disk or "")
    if defined is None or any(not path for path in defined.files):
        return  # a network or empty source: nothing to compare with headers
    why = difference(defined, chain, files_must_exist=not live)
    if why is None:
        return
    which = "live" if live else "persistent"
    if defined.closed and not defined.pinned:
        raise VshxError(
            f"the {which} definition of {dom.name()} {chain.disk} disagrees with the qcow2 "
            f"headers: {why} (headers: {chain.arrows()})",
            unbacked_hint(chain),
        )
    raise VshxError(
        f"the {which} definition of {dom.name()} {chain.disk} disagrees with the qcow2 headers: "
        f"{why} (headers: {chain.arrows()}; definition: "
        f"{' <- '.join(os.path.basename(p) for p in reversed(defined.files))})",
        align_hint(dom.name(), chain.disk or "", live),
    )


def unbacked_hint(chain: Chain) -> str:
    """What to do about a definition that opens the disk with no backing file."""
    unbacked = shlex.join(["qemu-img", "rebase", "-u", "-b", "", chain.active.path])
    return (
        "nothing was changed: vshx does not know which data the guest is meant to have. If the "
        f"guest is right to see no backing file, shut the domain off and remove it from the "
        f"header ({unbacked}); if the header is right, delete "
        "<backingStore/> from the disk with virsh edit, then look again with vshx chain"
    )


def align_hint(domain: str, disk: str, live: bool) -> str:
    chain = shlex.join(["vshx", "chain", domain, disk])
    if live:
        return (
            "QEMU runs on the definition's files: shut the domain down cleanly, then look again "
            f"with: {chain}"
        )
    return (
        f"libvirt starts {domain} on its definition. If the headers are right (layers merged "
        f"by hand), make the definition name their chain: {chain} prints "
        "the virsh update-device line. If the definition is right, point each header back at "
        "the file it names: qemu-img rebase -u -F FMT -b BELOW LAYER"
    )


def named_files(dom: libvirt.virDomain) -> set[str]:
    """Canonical paths of every file the persistent and (when running) live definitions name,
    pinned backing files included: a file one of them names is in use."""
    xmls = [persistent_xml(dom)]
    if dom.isActive():
        xmls.append(dom.XMLDesc(0))
    return {canonical(path) for xml in xmls for disk in parse(xml) for path in disk.files if path}


def disk_xml(xml: str, target: str, layers: list[tuple[str, str]], pin: bool) -> str:
    """The definition's ``<disk>`` for ``target`` naming ``layers`` (path, format; top
    first): the source is the first, and with ``pin`` the rest as its ``<backingStore>``
    chain (libvirt keeps it as given); without, no chain (libvirt reads the headers)."""
    root = parse_domain(xml)
    for node in root.findall("./devices/disk"):
        dev = node.find("target")
        if dev is None or dev.get("dev") != target:
            continue
        for child in list(node):
            if child.tag in ("backingStore", "alias"):
                node.remove(child)
        src = node.find("source")
        if src is not None:
            src.attrib.clear()
            name_source(node, src, layers[0][0])
        driver = node.find("driver")
        if driver is not None:
            driver.set("type", layers[0][1])
        if pin and len(layers) > 1:
            position = list(node).index(src) + 1 if src is not None else len(node)
            node.insert(position, _backing_store(layers[1:]))
        node.tail = None
        ET.indent(node)
        return xml_text(node, xml).strip() + "\n"
    raise VshxError(f"disk {target} is not in the definition")


def name_source(disk: ET.Element, source: ET.Element, path: str) -> None:
    """Make a ``<disk>`` of type file or block name ``path`` as libvirt types it: a block
    device as ``type='block'`` with ``<source dev=...>``, any other file as ``type='file'``
    with ``<source file=...>`` (a merge can leave a file disk on a device base, or the
    reverse: keeping the old type names a device as a file)."""
    if disk.get("type") not in (None, "file", "block"):
        source.set("file", path)
        return
    try:
        block = stat.S_ISBLK(files.stat(path).st_mode)
    except OSError:
        block = path.startswith("/dev/")  # not to be read here: as libvirt would guess it
    source.attrib.pop("file" if block else "dev", None)
    disk.set("type", "block" if block else "file")
    source.set("dev" if block else "file", path)


def _backing_store(layers: list[tuple[str, str]]) -> ET.Element:
    path, fmt = layers[0]
    block = path.startswith("/dev/")
    node = ET.Element("backingStore", type="block" if block else "file")
    ET.SubElement(node, "format", type=fmt)
    ET.SubElement(node, "source", {"dev" if block else "file": path})
    if len(layers) > 1:
        node.append(_backing_store(layers[1:]))
    return node
