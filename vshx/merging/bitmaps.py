"""Offline merges keep checkpoint bitmaps: steps that carry them into the receiving layer.

``qemu-img commit`` and a safe ``qemu-img rebase`` move data but not persistent bitmaps, and the
receiving layer's own recording bitmaps mark every byte the merge writes as changed.  So, around
the data step: the receiver's recording bitmaps are disabled first; afterwards every bitmap of
the layers whose data moved is added where the receiver lacks it (same granularity) and merged
in from each of those layers (``qemu-img bitmap --merge NAME -b SRC``), and recording is switched
back on.  A backup from every checkpoint then copies what it would have before the merge.
Where that cannot be exact, nothing is planned: the merge is refused, naming the checkpoint.
"""

from __future__ import annotations

from vshx.errors import VshxError
from vshx.plans import underneath
from vshx.plans.plan import Plan, Step, shell_line
from vshx.storage import host as files
from vshx.storage.bitmaps import LayerBitmaps, checkpoints_by_bitmap, read_layer
from vshx.storage.chain import Layer


def hint(name: str, owners: dict[str, list[str]], domain: str | None, image: str) -> str:
    """What the user can do about bitmap ``name`` that cannot be carried exactly."""
    if name in owners and domain:
        delete = shell_line(["virsh", "checkpoint-delete", domain, owners[name][0]])
        return (
            f"delete checkpoint {owners[name][0]} first ({delete}; the next backup is then a "
            "full one), or merge while the domain runs (libvirt carries bitmaps in a live merge)"
        )
    remove = shell_line(["qemu-img", "bitmap", "--remove", image, name])
    return f"if nothing needs it, remove it: {remove}"


def carry(
    plan: Plan, data: Step, into: Layer, sources: list[Layer], *, new_file: bool = False
) -> None:
    """Put the bitmap steps around ``data`` (already in ``plan``), which writes the data of
    ``sources`` into ``into``; ``new_file``: ``into`` is created by ``data`` (no bitmaps yet).
    Raises before anything runs when a checkpoint would break; adds nothing without bitmaps."""
    layers = [layer for layer in sources if files.exists(layer.path)]
    if len(layers) < len(sources) or not (new_file or files.exists(into.path)):
        plan.notes.append("bitmaps not read: the images are not there")
        return
    read = [read_layer(layer) for layer in sources]
    receiver = LayerBitmaps(into, (), into.format == "qcow2") if new_file else read_layer(into)
    if not receiver.bitmaps and not any(r.bitmaps for r in read):
        return
    target = plan.target
    owners = checkpoints_by_bitmap(
        target.dom if target is not None else None,
        (target.chain.disk or "") if target is not None else "",
    )
    beyond = [read_layer(layer) for layer in far_neighbour(plan, into, sources)]
    domain = target.chain.domain if target is not None else None
    refuse_inexact(receiver, read, owners, beyond, domain)
    fmt = into.format
    before = [
        Step(
            f"stop bitmap {b.name} of {into.name} from recording the merge's writes",
            ["qemu-img", "bitmap", "-f", fmt, "--disable", into.path, b.name],
            underneath=underneath.bitmap("disable"),
        )
        for b in receiver.bitmaps
        if b.recording
    ]
    plan.steps[plan.steps.index(data) : plan.steps.index(data)] = before
    for name in names_of(read):
        holders = [r for r in read if r.get(name) is not None]
        own = receiver.get(name)
        first = holders[0].get(name)
        assert first is not None
        if own is None:
            plan.add(
                Step(
                    f"add bitmap {name} to {into.name} ({_owned(name, owners)})",
                    ["qemu-img", "bitmap", "-f", fmt, "--add", "-g", str(first.granularity)]
                    + ["--disable", into.path, name],
                    underneath=underneath.bitmap("add"),
                )
            )
        recording = own.recording if own is not None else first.recording
        for number, holder in enumerate(holders, 1):
            argv = ["qemu-img", "bitmap", "-f", fmt, "--merge", name, "-b", holder.layer.path]
            argv += ["-F", holder.layer.format]
            if number == len(holders) and recording:
                argv.append("--enable")
            plan.add(
                Step(
                    f"merge bitmap {name} of {holder.layer.name} into {into.name}"
                    + (" and record again" if "--enable" in argv else ""),
                    argv + [into.path, name],
                    underneath=underneath.bitmap("merge"),
                )
            )
    for own_bitmap in receiver.bitmaps:
        if own_bitmap.recording and all(r.get(own_bitmap.name) is None for r in read):
            plan.add(
                Step(
                    f"bitmap {own_bitmap.name} of {into.name} records again",
                    ["qemu-img", "bitmap", "-f", fmt, "--enable", into.path, own_bitmap.name],
                    underneath=underneath.bitmap("enable"),
                )
            )


def far_neighbour(plan: Plan, into: Layer, sources: list[Layer]) -> list[Layer]:
    """The layer next to ``sources`` on the side away from ``into``: a gap in a bitmap that
    ends there would be hidden by the merge."""
    if plan.target is None or not sources:
        return []
    chain = plan.target.chain
    ends = sorted(sources, key=lambda layer: layer.position)
    side = [chain.above(ends[0]), chain.below(ends[-1])]
    return [layer for layer in side if layer is not None and layer.canonical != into.canonical]


def names_of(read: list[LayerBitmaps]) -> list[str]:
    """Every bitmap name of these layers, once, in the order found."""
    return list(dict.fromkeys(b.name for r in read for b in r.bitmaps))


def _owned(name: str, owners: dict[str, list[str]]) -> str:
    if name in owners:
        return "checkpoint " + ", ".join(owners[name])
    return "no libvirt checkpoint names it"


def _what(name: str, owners: dict[str, list[str]]) -> str:
    if name in owners:
        return f"checkpoint {', '.join(owners[name])} (bitmap {name})"
    return f"bitmap {name}"


def refuse_inexact(
    receiver: LayerBitmaps,
    read: list[LayerBitmaps],
    owners: dict[str, list[str]],
    beyond: list[LayerBitmaps] | None = None,
    domain: str | None = None,
) -> None:
    """Raise when a bitmap cannot be carried exactly: inconsistent (in-use), no qcow2 v3 to
    hold it, granularities that differ, or a gap among the merged layers and their neighbours
    (``beyond``): libvirt refuses a backup across a gap, and merging would hide it."""
    involved = [receiver, *read]
    for entry in involved:
        for bitmap in entry.bitmaps:
            if bitmap.in_use:
                raise VshxError(
                    f"{_what(bitmap.name, owners)} in {entry.layer.name} is inconsistent "
                    "(in-use: a QEMU has it open, or stopped without saving it); merging "
                    "would break it",
                    hint(bitmap.name, owners, domain, entry.layer.path),
                )
    names = names_of(read)
    if names and not receiver.can_hold:
        raise VshxError(
            f"{receiver.layer.name} ({receiver.layer.format}) cannot hold bitmaps: "
            f"{_what(names[0], owners)} would break",
            hint(names[0], owners, domain, read[0].layer.path),
        )
    for name in names:
        sizes = {b.granularity for e in involved for b in e.bitmaps if b.name == name}
        if len(sizes) > 1:
            raise VshxError(
                f"{_what(name, owners)} has different granularities in these layers "
                f"({', '.join(str(s) for s in sorted(sizes))}); it cannot be merged exactly",
                hint(name, owners, domain, receiver.layer.path),
            )
    in_order = sorted([*involved, *(beyond or [])], key=lambda e: e.layer.position)
    for name in names_of(in_order):
        holds = [e.get(name) is not None for e in in_order]
        first, last = holds.index(True), len(holds) - 1 - holds[::-1].index(True)
        if not all(holds[first : last + 1]):
            gap = next(e for e, h in zip(in_order[first:], holds[first:], strict=True) if not h)
            raise VshxError(
                f"{_what(name, owners)} is missing from {gap.layer.name} between layers that "
                "hold it: its record of changes has a gap, which merging would hide",
                hint(name, owners, domain, in_order[first].layer.path),
            )
