"""How the shell shows things: virsh-style tables, chains in arrows, and JSON for scripts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vshx.storage.chain import Chain, Layer


def printable(text: str) -> str:
    """``text`` on one line: control characters (a newline in a file name) shown escaped."""
    return "".join(
        ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


def comment(text: str) -> str:
    """The one escaper for ``#`` lines: ``text`` as one comment line that sh never runs.

    A newline (or any other control character, ``\\r``, U+2028 ...) would end the comment and
    start a command; each is shown escaped instead.  Every ``#`` line vshx prints into a
    script (notes, tables, verdicts, before/after, echoed output) is made here.
    """
    return f"# {printable(text)}"


def comments(lines: str | Iterable[str]) -> str:
    """Several ``#`` lines (a table, a command's output), each through :func:`comment`;
    ``lines`` may be one text (split at its line ends) or a list of lines."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    return "".join(comment(line) + "\n" for line in lines)


def table(rows: list[list[str]], header: list[str]) -> str:
    """A virsh-style table: a header, a rule, left-aligned columns; a control character in a
    cell (a newline in a snapshot name) is shown escaped, so each row stays one line."""
    rows = [[printable(str(cell)) for cell in row] for row in rows]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = " " + "   ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header).rstrip(), "-" * (sum(widths) + 3 * len(widths))]
    lines += [fmt.format(*r).rstrip() for r in rows]
    return "\n".join(lines)


def role(chain: Chain, layer: Layer) -> str:
    if layer.position == 0:
        return "active"
    return "base" if layer is chain.bottom else ""


def render_chain(chain: Chain) -> str:
    """The chain in arrow notation, then one line per layer with its sizes."""
    from vshx.storage.chain import human_size

    if chain.domain:
        how = "running: live block jobs" if chain.live else "shut off: offline qemu-img"
        head = f"{chain.domain} {chain.disk} ({how})"
    else:
        head = f"image {chain.active.path} (bare image: offline qemu-img)"
    rows = [
        [
            chain.ref_of(layer),
            layer.path,
            layer.format,
            human_size(layer.virtual_size),
            human_size(layer.allocated),
            role(chain, layer),
        ]
        for layer in chain.layers
    ]
    body = table(rows, ["Ref", "File", "Format", "Virtual", "Allocated", ""])
    return f"{head}\n  {chain.arrows()}\n\n{body}"


def chain_document(chain: Chain) -> dict[str, Any]:
    """One chain as plain data: what `chain --json` prints."""
    return {
        "domain": chain.domain,
        "disk": chain.disk,
        "live": chain.live,
        "layers": [
            {
                "ref": chain.ref_of(layer),
                "position": layer.position,
                "index": layer.index,
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


def to_json(document: object) -> str:
    import json  # only --json pays for it

    return json.dumps(document, indent=2, ensure_ascii=False)
