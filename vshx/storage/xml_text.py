"""XML text of a document vshx changed, with the namespace prefixes it was written with.

ElementTree reads ``<vshx:lab xmlns:vshx="URI">`` as the tag ``{URI}lab`` and forgets the
prefix: written back, it names the namespace ``ns0`` (declared on the root).  A domain's or a
snapshot's ``<metadata>`` holds other programs' elements under their own prefixes, and a
redefined snapshot should keep them as they were: ``xml_text`` writes each namespace with the
prefix the source text declared for it (the first, where one URI had several), declared on the
element that first needs it, as libvirt writes them.  A namespace the source declared only as
the default one (``xmlns="URI"``) is written as the default namespace again.  Nothing
process-wide is changed (``ET.register_namespace`` would be, and refuses prefixes like ``ns0``).
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET

XML_NS = "http://www.w3.org/XML/1998/namespace"


def declared(source: str) -> tuple[dict[str, str], set[str]]:
    """The namespaces ``source`` declares: URI -> its first prefix, and the URIs it declares
    as the default namespace."""
    prefixes: dict[str, str] = {}
    defaults: set[str] = set()
    try:
        found = [ns for _e, ns in ET.iterparse(io.StringIO(source), events=("start-ns",))]
    except ET.ParseError:  # a control character in a description: the declarations by text
        found = [(prefix, uri) for prefix, _q, uri in DECLARATION.findall(source)]
    for prefix, uri in found:
        if prefix:
            prefixes.setdefault(uri, prefix)
        elif uri:
            defaults.add(uri)
    return prefixes, defaults


DECLARATION = re.compile(r"""\sxmlns(?::([\w.-]+))?\s*=\s*(["'])(.*?)\2""")


def xml_text(root: ET.Element, source: str) -> str:
    """``ET.tostring(root, encoding="unicode")``, each namespace under the prefix ``source``
    (the text ``root`` or its document was read from) gave it."""
    prefixes, defaults = declared(source)
    if not prefixes and not defaults:
        return ET.tostring(root, encoding="unicode")
    taken = set(prefixes.values())
    spare: dict[str, str] = {}  # URI -> a prefix of ours, where the source's is taken or none

    def qualified(tag: str) -> tuple[str, str]:
        uri, _, local = tag[1:].partition("}")
        return uri, local

    def copy(node: ET.Element, scope: dict[str, str], default: str) -> ET.Element:
        if not isinstance(node.tag, str):  # a comment or processing instruction
            return node
        scope = dict(scope)
        declare: dict[str, str] = {}

        def prefixed(uri: str, local: str) -> str:
            if uri == XML_NS:
                return f"xml:{local}"
            prefix = prefixes.get(uri)
            if prefix is None or scope.get(prefix, uri) != uri:  # none, or another's here
                prefix = spare.get(uri) or next(
                    f"ns{k}" for k in range(len(taken) + 1) if f"ns{k}" not in taken
                )
                spare[uri] = prefix
                taken.add(prefix)
            if scope.get(prefix) != uri:
                scope[prefix] = declare[f"xmlns:{prefix}"] = uri
            return f"{prefix}:{local}"

        tag = node.tag
        if tag.startswith("{"):
            uri, local = qualified(tag)
            if uri in defaults and uri not in prefixes:
                if default != uri:
                    default = declare["xmlns"] = uri
                tag = local
            else:
                tag = prefixed(uri, local)
        elif default:  # an element in no namespace under a default one
            default = declare["xmlns"] = ""
        attrib = {}
        for name, value in node.attrib.items():
            attrib[prefixed(*qualified(name)) if name.startswith("{") else name] = value
        made = ET.Element(tag, {**declare, **attrib})
        made.text, made.tail = node.text, node.tail
        made.extend(copy(child, scope, default) for child in node)
        return made

    return ET.tostring(copy(root, {}, ""), encoding="unicode")
