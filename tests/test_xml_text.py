"""A changed snapshot's XML keeps the namespace prefixes of its <metadata> (atk6 note)."""

import xml.etree.ElementTree as ET

from vshx.storage.xml_text import xml_text

SOURCE = (
    "<domainsnapshot><domain><metadata>"
    '<app:x xmlns:app="http://example.org/app" app:a="1" b="2"><app:y/></app:x>'
    '<vshx:lab xmlns:vshx="https://vshx.invalid/lab"/>'
    '<foo xmlns="http://default.example/"><bar/><baz xmlns=""/></foo>'
    '<ns0:q xmlns:ns0="http://n0.example/"/>'
    '<z:w xmlns:z="http://z1.example/"><z:w2 xmlns:z="http://z2.example/"/></z:w>'
    '</metadata><devices><disk xml:lang="en"><source file="/a"/></disk></devices>'
    "</domain></domainsnapshot>"
)


def test_prefixes_kept_and_document_unchanged():
    root = ET.fromstring(SOURCE)
    root.find("./domain/devices/disk/source").set("file", "/b")
    text = xml_text(root, SOURCE)
    assert '<app:x xmlns:app="http://example.org/app" app:a="1" b="2"><app:y />' in text
    assert '<vshx:lab xmlns:vshx="https://vshx.invalid/lab" />' in text
    assert '<foo xmlns="http://default.example/"><bar /><baz xmlns="" /></foo>' in text
    assert '<ns0:q xmlns:ns0="http://n0.example/" />' in text
    assert 'xml:lang="en"' in text and 'file="/b"' in text
    # the same document as ElementTree's own writing of it
    assert ET.tostring(ET.fromstring(text)) == ET.tostring(root)
    assert "<app:" not in ET.tostring(root).decode()  # nothing registered process-wide


def test_no_namespace_as_before():
    source = "<domain><name>d</name></domain>"
    root = ET.fromstring(source)
    assert xml_text(root, source) == ET.tostring(root, encoding="unicode")
