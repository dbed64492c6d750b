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

import json
import os
from typing import TYPE_CHECKING, NamedTuple

from vshx.errors import VshxError
from vshx.plans import underneath
from vshx.plans.journal import clear_argv
from vshx.plans.plan import Plan, Step, shell_line
from vshx.plans.underneath import BITMAP_KINDS, BitmapKind
from vshx.storage import host as files
from vshx.storage.bitmaps import Bitmap, LayerBitmaps, checkpoints_by_bitmap, read_layer
from vshx.storage.chain import Layer, canonical

if TYPE_CHECKING:
    from vshx.plans.context import Context as Session
    from vshx.plans.journal import Entry
    from vshx.plans.target import Target


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
        marked(
            Step(
                f"stop bitmap {b.name} of {into.name} from recording the merge's writes",
                ["qemu-img", "bitmap", "-f", fmt, "--disable", into.path, b.name],
                underneath=underneath.bitmap("disable"),
            ),
            "disable",
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
                marked(
                    Step(
                        f"add bitmap {name} to {into.name} ({_owned(name, owners)})",
                        ["qemu-img", "bitmap", "-f", fmt, "--add", "-g", str(first.granularity)]
                        + ["--disable", into.path, name],
                        underneath=underneath.bitmap("add"),
                    ),
                    "add",
                )
            )
        recording = own.recording if own is not None else first.recording
        for number, holder in enumerate(holders, 1):
            argv = ["qemu-img", "bitmap", "-f", fmt, "--merge", name, "-b", holder.layer.path]
            argv += ["-F", holder.layer.format]
            if number == len(holders) and recording:
                argv.append("--enable")
            plan.add(
                marked(
                    Step(
                        f"merge bitmap {name} of {holder.layer.name} into {into.name}"
                        + (" and record again" if "--enable" in argv else ""),
                        argv + [into.path, name],
                        underneath=underneath.bitmap("merge"),
                    ),
                    "merge",
                )
            )
    for own_bitmap in receiver.bitmaps:
        if own_bitmap.recording and all(r.get(own_bitmap.name) is None for r in read):
            plan.add(
                marked(
                    Step(
                        f"bitmap {own_bitmap.name} of {into.name} records again",
                        ["qemu-img", "bitmap", "-f", fmt, "--enable", into.path, own_bitmap.name],
                        underneath=underneath.bitmap("enable"),
                    ),
                    "enable",
                )
            )


def marked(step: Step, kind: BitmapKind) -> Step:
    """``step`` (``qemu-img bitmap ... FILE NAME``) marked as a bitmap step for the journal."""
    step.bitmap = (kind, step.argv[-2], step.argv[-1])
    return step


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


class BitmapStep(NamedTuple):
    """One ``qemu-img bitmap`` step of an interrupted plan, as its journal keeps it."""

    number: int
    kind: BitmapKind  # a plan's: disable, add, merge, enable; recover's undo: enable, remove
    path: str
    name: str
    argv: list[str]


def recover_steps(session: Session, target: Target, entry: Entry) -> list[Step]:
    """For ``recover``: settle the checkpoint bitmaps of an offline plan killed between its
    bitmap steps (a receiver's bitmaps disabled, or added and not yet merged: libvirt then
    refuses an incremental backup from those checkpoints).  The journal keeps those steps
    and the chains before and after the plan; the chain found now decides:

    * the chain before the plan (no layer whose data moved has left it; each still holds its
      own bitmaps): undo, each bitmap the plan disabled records again, each it added is
      removed (``qemu-img bitmap --enable`` / ``--remove``);
    * the chain after it: finish, the plan's bitmap steps from the interrupted one on (an
      ``--add`` done already is skipped; a merge or enable again changes nothing);
    * anything else, or a running domain (whose open images qemu-img cannot change, and
      libvirt offers no call that would), or a file gone: vshx cannot know, so it refuses,
      naming what it would run, and changes nothing.

    Nothing when the plan had no bitmap steps, had not begun them, or had run them all."""
    text = entry.get("bitmaps")
    if not text or entry.copied or entry.get("resume"):
        return []
    chain = target.chain
    where = shell_line([chain.domain or chain.active.path, *([chain.disk] if chain.disk else [])])
    try:
        saved = json.loads(str(text))
        steps = [
            BitmapStep(int(n), kind_of(kind), str(path), str(name), [str(w) for w in argv])
            for n, kind, path, name, argv in saved["steps"]
        ]
        before, after = saved["before"], saved["after"]
        number = int(str(entry.get("step")))
    except (ValueError, TypeError, KeyError) as exc:
        raise VshxError(
            f"the journal's record of the interrupted plan's bitmap steps cannot be read ({exc})",
            f"nothing was changed; see the bitmaps with qemu-img info, and the checkpoints "
            f"with vshx chain {where}",
        ) from None
    if not steps or number > steps[-1].number or number < steps[0].number:
        return []  # all ran before it stopped, or none had begun
    now = [layer.canonical for layer in chain.layers]
    if now == before:
        planned = undo(steps, number)
        how = "the chain is as before the plan: its bitmap steps are undone"
    elif after is not None and now == after:
        planned = redo(steps, number)
        how = "the chain is the plan's: its remaining bitmap steps are finished"
    else:
        planned = None
        how = ""
    pending = "; ".join(shell_line(s.argv) for s in steps if s.number >= number)
    if planned == []:
        return []  # the bitmaps are as before the plan already
    dom = target.dom
    owners = checkpoints_by_bitmap(dom, chain.disk or "")
    serving = sorted({c for s in steps for c in owners.get(s.name, [])})
    sources = {s.argv[s.argv.index("-b") + 1] for s in planned or [] if "-b" in s.argv}
    missing = [p for p in sorted({s.path for s in planned or []} | sources) if not files.exists(p)]
    if dom is not None and not serving and (planned is None or missing or dom.isActive()):
        # what vshx cannot settle serves no checkpoint (any more): nothing for libvirt to refuse
        session.warn(
            f"no checkpoint of {dom.name()} uses the bitmaps the interrupted plan was carrying "
            f"({', '.join(sorted({s.name for s in steps}))}): they are left as they are"
        )
        return []
    if dom is not None:
        forget = "; ".join(
            shell_line(["virsh", "checkpoint-delete", dom.name(), c, "--metadata"]) for c in serving
        )
        way = (
            f"forget the checkpoints they serve ({forget}; an incremental backup from them is "
            "then impossible, the next one is full) and run vshx recover again"
        )
    else:
        way = "settle them by hand, then clear the journal: " + shell_line(clear_argv(target))
    if dom is not None and dom.isActive():
        raise VshxError(
            f"{dom.name()} runs, and the interrupted plan stopped between its checkpoint "
            f"bitmap steps (step {number}): qemu-img cannot change the bitmaps of images a "
            "running QEMU has open, and libvirt has no call that would; while it ran, a "
            "bitmap left disabled recorded none of the guest's writes",
            f"nothing was changed; those checkpoints ({', '.join(serving)}) cannot be trusted "
            f"now: delete them (virsh checkpoint-delete {shell_line([dom.name()])} CHECKPOINT; "
            f"the next backup is then a full one) and run vshx recover {where} again",
        )
    if planned is None:
        raise VshxError(
            f"the chain of {where} is neither the one before the interrupted plan nor the one "
            f"after it: vshx cannot tell which of its checkpoint bitmap steps (from step "
            f"{number}) are needed",
            f"nothing was changed; the plan's bitmap steps from there: {pending}. To go on, {way}",
        )
    if missing:
        raise VshxError(
            f"{missing[0]} is gone: the interrupted plan's checkpoint bitmap steps cannot be "
            f"settled ({how})",
            f"nothing was changed; the plan's bitmap steps from step {number}: {pending}. "
            f"To go on, {way}",
        )
    if planned and now and any(canonical(s.path) == now[0] for s in planned):
        session.warn(
            f"settling the checkpoint bitmaps of the active layer of {where} assumes it has not "
            "run since the plan stopped: a run while they were disabled recorded none of the "
            "guest's writes (if it ran, delete those checkpoints instead: virsh "
            "checkpoint-delete; the next backup is then a full one)"
        )
    return [
        Step(f"{described(s)} ({how})", s.argv, underneath=underneath.bitmap(s.kind))
        for s in planned
    ]


def described(step: BitmapStep) -> str:
    """What a bitmap step of recover does, in words."""
    name, file = step.name, os.path.basename(step.path)
    if step.kind == "merge":
        source = os.path.basename(step.argv[step.argv.index("-b") + 1])
        again = " and record again" if "--enable" in step.argv else ""
        return f"merge bitmap {name} of {source} into {file}{again}"
    return {
        "disable": f"stop bitmap {name} of {file} from recording the merge's writes",
        "add": f"add bitmap {name} to {file}",
        "enable": f"bitmap {name} of {file} records again",
        "remove": f"remove bitmap {name} from {file}",
    }[step.kind]


def kind_of(word: object) -> BitmapKind:
    """A bitmap step's kind as the journal keeps it; ValueError for any other word."""
    for kind in BITMAP_KINDS:
        if word == kind:
            return kind
    raise ValueError(f"no bitmap step kind: {word!r}")


def bitmap_now(path: str, fmt: str, name: str) -> Bitmap | None:
    """Bitmap ``name`` of the image ``path`` (format ``fmt``) as it is in the file now, None
    when the file holds none by that name; raises when the file cannot be read."""
    return read_layer(Layer(path, fmt, 0)).get(name)


def fmt_of(step: BitmapStep) -> str:
    argv = step.argv
    return argv[argv.index("-f") + 1] if "-f" in argv else "qcow2"


def undo(steps: list[BitmapStep], number: int) -> list[BitmapStep]:
    """The steps that bring the bitmaps back to the state before the plan: each bitmap the
    plan disabled (step ``number`` and before) records again, each it added is removed."""
    found: list[BitmapStep] = []
    added = {(s.path, s.name) for s in steps if s.kind == "add" and s.number <= number}
    for path, name in sorted(added):
        fmt = fmt_of(next(s for s in steps if (s.path, s.name) == (path, name)))
        if files.exists(path) and bitmap_now(path, fmt, name) is not None:
            argv = ["qemu-img", "bitmap", "-f", fmt, "--remove", path, name]
            found.append(BitmapStep(number, "remove", path, name, argv))
    for s in steps:
        if s.kind != "disable" or s.number > number or (s.path, s.name) in added:
            continue
        fmt = fmt_of(s)
        now = bitmap_now(s.path, fmt, s.name) if files.exists(s.path) else None
        if now is not None and not now.recording:
            argv = ["qemu-img", "bitmap", "-f", fmt, "--enable", s.path, s.name]
            found.append(BitmapStep(number, "enable", s.path, s.name, argv))
    return found


def redo(steps: list[BitmapStep], number: int) -> list[BitmapStep]:
    """The plan's bitmap steps from step ``number`` on; an ``--add`` whose bitmap is there
    already (it ran) is left out."""
    found = []
    for s in steps:
        if s.number < number:
            continue
        if s.kind == "add" and bitmap_now(s.path, fmt_of(s), s.name) is not None:
            continue
        found.append(s)
    return found
