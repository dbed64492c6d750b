"""How a chain shows: arrows and a table of its layers, or plain data for `chain --json`."""

from __future__ import annotations

from typing import Any

from vshx.spec.render import printable, table
from vshx.storage.chain import Chain, Layer, human_size


def role(chain: Chain, layer: Layer) -> str:
    if layer.position == 0:
        return "active"
    return "base" if layer is chain.bottom else ""


def render_chain(chain: Chain, held_by: str = "") -> str:
    """The chain in arrow notation, then one line per layer with its sizes; names escaped
    (printable): a file name's control characters would reach the terminal or forge lines.
    ``held_by``: for an image named alone, the domain disks whose chains hold it."""
    if chain.domain:
        how = "running: live block jobs" if chain.live else "shut off: offline qemu-img"
        head = f"{printable(chain.domain)} {printable(chain.disk or '')} ({how})"
    elif held_by:
        head = f"image {printable(chain.active.path)} (a layer of {printable(held_by)})"
    else:
        head = f"image {printable(chain.active.path)} (bare image: offline qemu-img)"
    rows = [
        [
            printable(chain.ref_of(layer)),
            printable(layer.path),
            printable(layer.format),
            human_size(layer.virtual_size),
            human_size(layer.allocated),
            role(chain, layer),
        ]
        for layer in chain.layers
    ]
    body = table(rows, ["Ref", "File", "Format", "Virtual", "Allocated", ""])
    return f"{head}\n  {printable(chain.arrows())}\n\n{body}"


def chain_document(chain: Chain) -> dict[str, Any]:
    """One chain as plain data: an item of ``chain --json``'s ``chains``."""
    return {
        "domain": chain.domain,
        "disk": chain.disk,
        "live": chain.live,
        "layers": [
            {
                "ref": chain.ref_of(layer),
                "position": layer.position,
                "index": layer.libvirt_index,
                "path": layer.path,
                "format": layer.format,
                "backing": layer.backing,
                "backing_format": layer.backing_format,
                "virtual_size": layer.virtual_size,
                "allocated": layer.allocated,
                "role": role(chain, layer) or "middle",
            }
            for layer in chain.layers
        ],
    }
