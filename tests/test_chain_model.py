"""Chain parsing from captured qemu-img JSON and live XML, and REF resolution."""

import json
from pathlib import Path

import pytest

from vshx.errors import VshxError
from vshx.storage.chain import (
    Chain,
    chain_from_info,
    disks_from_xml,
    merge_live_indexes,
    refuse_blurred_names,
)

FIXTURES = Path(__file__).parent / "fixtures"

LIVE_XML = """<domain><devices><disk type='file' device='disk'>
<driver name='qemu' type='qcow2'/><source file='/tmp/c/sn2.qcow2' index='3'/>
<backingStore type='file' index='2'><format type='qcow2'/><source file='/tmp/c/sn1.qcow2'/>
<backingStore type='file' index='1'><format type='qcow2'/><source file='/tmp/c/base.qcow2'/>
<backingStore/></backingStore></backingStore><target dev='vda' bus='virtio'/></disk>
</devices></domain>"""


@pytest.fixture
def chain() -> Chain:
    info = json.loads((FIXTURES / "chain-relative.json").read_text())
    return Chain(chain_from_info(info), disk="vda")


def test_layers_in_order_with_backing_as_written(chain):
    assert [layer.name for layer in chain.layers] == ["sn2.qcow2", "sn1.qcow2", "base.qcow2"]
    assert chain.layers[1].backing == "base.qcow2" and chain.layers[1].backing_is_relative
    assert chain.layers[0].backing == "/tmp/c/sn1.qcow2"
    assert chain.arrows() == "base.qcow2 <- sn1.qcow2 <- sn2.qcow2 (active)"


@pytest.mark.parametrize("ref", ["/tmp/c/sn1.qcow2", "sn1.qcow2", "vda[2]", "/tmp/c/./sn1.qcow2"])
def test_resolve_forms(chain, ref):
    assert chain.resolve(ref).name == "sn1.qcow2"


def test_unknown_ref_lists_the_chain(chain):
    with pytest.raises(VshxError) as info:
        chain.resolve("nosuch.qcow2")
    assert "vda[1]=sn2.qcow2" in info.value.hint  # libvirt's numbering: 1 = active
    # a snapshot's name is no REF (nu13 #14): the hint says what names a layer
    named = Chain(chain.layers, domain="demo", disk="vda")
    with pytest.raises(VshxError) as info:
        named.resolve("s1")
    assert "is not a layer of this chain (demo vda)" in info.value.message
    assert "(sn1 for sn1.qcow2)" in info.value.hint
    assert "not by a snapshot's name" in info.value.hint


def test_a_name_of_two_layers_is_refused_not_guessed():
    """An outside attack: two layers named disk.qcow2 (in a/ and b/): `--base disk.qcow2`
    wrote into the nearer one without a word.  Now the name is refused with both paths; the
    full path and the index still name each."""
    from vshx.errors import UsageError
    from vshx.storage.chain import Layer

    top, near, far = "/x/top.qcow2", "/x/b/disk.qcow2", "/x/a/disk.qcow2"
    layers = [Layer(top, "qcow2", 0, backing=near), Layer(near, "qcow2", 1, backing=far)]
    ambiguous = Chain([*layers, Layer(far, "qcow2", 2)])
    with pytest.raises(UsageError) as info:
        ambiguous.resolve("disk.qcow2")
    assert near in info.value.message and far in info.value.message
    assert ambiguous.resolve(far).path == far and ambiguous.resolve("image[2]").path == near


def test_live_xml_indexes(chain):
    (disk,) = disks_from_xml(LIVE_XML)
    assert disk.target == "vda" and disk.source == "/tmp/c/sn2.qcow2"
    assert [p for p, _f, _i in disk.backing] == ["/tmp/c/sn1.qcow2", "/tmp/c/base.qcow2"]
    live = Chain(merge_live_indexes(chain.layers, disk), disk="vda")
    assert [layer.libvirt_index for layer in live.layers] == [3, 2, 1]
    assert live.resolve("vda[1]").name == "base.qcow2"
    assert live.between(live.resolve("vda[3]"), live.resolve("vda[1]"))[-1].name == "sn1.qcow2"


def test_qcow2_header_reader_agrees_with_qemu_img(tmp_path):
    import subprocess

    from vshx.storage.chain import image_chain
    from vshx.storage.qcow2 import backing_file, chain_paths

    (tmp_path / "sub").mkdir()
    base, mid, top = tmp_path / "b a s e.qcow2", tmp_path / "sub" / "mid.qcow2", tmp_path / "top"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1M"], check=True)
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            "../b a s e.qcow2",
            str(mid),
        ],
        check=True,
    )
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(mid), str(top)],
        check=True,
    )
    assert backing_file(str(mid)) == "../b a s e.qcow2" and backing_file(str(base)) is None
    assert chain_paths(str(top)) == [layer.canonical for layer in image_chain(str(top)).layers]
    (tmp_path / "raw.img").write_bytes(b"\0" * 4096)
    assert backing_file(str(tmp_path / "raw.img")) is None


def test_the_chain_a_merge_leaves_names_the_new_backing_files(chain):
    """A merge rewrites the backing file of the layer above the removed ones (what a
    predicted chain, --plan-json's ``after``, must say); the others keep theirs."""
    middle = chain.layers[1:-1]
    after = chain.without(middle)
    assert [layer.position for layer in after.layers] == [0, 1]
    assert after.layers[0].backing == chain.layers[-1].path
    assert after.layers[0].backing_format == chain.layers[-1].format
    assert after.layers[-1].backing == chain.layers[-1].backing
    top_gone = chain.without(chain.layers[:1])
    assert top_gone.layers[0].backing == chain.layers[1].backing


def test_chain_shows_control_characters_in_names_escaped() -> None:
    """A file name's escape sequences and newlines never reach the terminal raw (they could
    retitle it, colour it or forge a line of the chain)."""
    from vshx.storage.chain import Layer
    from vshx.storage.chain_view import render_chain

    hostile = "/x/top\x1b]0;PWN\x07\x1b[31m\nsn9.qcow2 <- evil\udcfe.qcow2"
    layers = [Layer(hostile, "qcow2", 0, "base.qcow2"), Layer("/x/base.qcow2", "qcow2", 1)]
    shown = render_chain(Chain(layers))
    assert "\x1b" not in shown and "\x07" not in shown and "\udcfe" not in shown
    assert "\\x1b]0;PWN\\x07" in shown and "\\n" in shown
    assert len(shown.splitlines()) == 7  # head, arrows, blank, table head, rule, two layers


@pytest.mark.parametrize("quote", ["'", '"'])
@pytest.mark.parametrize("char", ["\n", "\r", "\t"])
def test_a_disk_file_name_with_a_line_break_is_refused_not_read_as_a_space(quote, char):
    """libvirt writes a path's newline raw into the attribute, and an XML parser reads it back
    as a space: that may be another file (a decoy), so the disk is refused."""
    name = f"/images/sn2.a{char}b"
    xml = (
        "<domain><devices><disk type='file' device='disk'><driver type='qcow2'/>"
        f"<source file={quote}{name}{quote}/><target dev='vda'/></disk></devices></domain>"
    )
    with pytest.raises(VshxError) as refused:
        disks_from_xml(xml)
    assert "line break or tab" in refused.value.message and char not in refused.value.message
    # out of the disks (vshx's own metadata, written by libvirt the same way) it names no file
    fine = xml.replace(f"{quote}{name}{quote}", "'/images/ok'").replace(
        "<devices>", f"<metadata><j xmlns='urn:x' what={quote}a{char}b{quote}/></metadata><devices>"
    )
    assert [d.source for d in disks_from_xml(fine)] == ["/images/ok"]
    # a snapshot's <disk .../> with no file does not reach into the metadata after it
    snapshot = (
        "<domainsnapshot><disks><disk name='vdb' snapshot='no'/></disks><domain><metadata>"
        f"<j xmlns='urn:x' what={quote}a{char}b{quote}/></metadata><devices><disk>"
        "<source file='/images/ok'/><target dev='vda'/></disk></devices></domain>"
        "</domainsnapshot>"
    )
    refuse_blurred_names(snapshot, "a snapshot")


def test_a_warning_stays_one_line_whatever_a_file_name_holds():
    """lab-destroy's "keeping FILE: still used by ..." (and every other warning) names files:
    a line break in one would forge a line of output (an outside attacker's finding)."""
    import io

    from vshx.shell.session import Session

    err = io.StringIO()
    Session("test:///default", err=err).warn("keeping /x/sn2.a\nwarning: forged\x1b[2J")
    assert err.getvalue() == "warning: keeping /x/sn2.a\\nwarning: forged\\x1b[2J\n"


def test_a_usage_scan_reads_a_blurred_disk_as_both_files_it_may_mean():
    """Another domain's disk named with a raw line break, CR LF or tab (libvirt writes them
    raw): the scan lists it once with the exact name (the file QEMU opened) and once as a
    parser reads it (one space for each, CR LF as one: what libvirt opens once it reads its XML
    again), instead of refusing every merge on the host; a plain disk stays one entry."""
    from vshx.storage.snapshot_refs import snapshot_files

    xml = (
        "<domain><devices><disk type='file' device='disk'><driver type='qcow2'/>"
        "<source file='/images/sn2.a\nb\r\nc'/><backingStore type='file'>"
        "<source file=\"/images/x\ty > z\"/></backingStore><target dev='vda'/></disk>"
        "<disk type='file' device='disk'><source file='/images/ok'/><target dev='vdb'/></disk>"
        "</devices></domain>"
    )
    found = [(d.target, d.source, [p for p, _f, _i in d.backing], d.blurred) for d in
             disks_from_xml(xml, "domain x", "both")]  # fmt: skip
    assert found == [
        ("vda", "/images/sn2.a\nb\r\nc", ["/images/x\ty > z"], True),
        ("vda", "/images/sn2.a b c", ["/images/x y > z"], True),
        ("vdb", "/images/ok", [], False),
    ]
    with pytest.raises(VshxError):  # the domain vshx works on: refused as before
        disks_from_xml(xml, "domain x")
    snapshot = (
        "<domainsnapshot><name>s</name><disks><disk name='vda' snapshot='external'>"
        "<source file='/images/sn3.a\nb'/></disk></disks><domain><devices><disk>"
        "<source file='/images/sn2.qcow2'/><target dev='vda'/></disk></devices></domain>"
        "</domainsnapshot>"
    )
    assert snapshot_files(snapshot) == [
        ("vda moment", "/images/sn2.qcow2"),
        ("vda overlay", "/images/sn3.a\nb"),
        ("vda overlay", "/images/sn3.a b"),
    ]
