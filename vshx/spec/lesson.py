"""A lesson's declaration: what the student is asked to do on a practice lab, and the goal.

Lessons are data (a NamedTuple, like ``Command``): the ``lesson`` command builds the lab,
prints the task and checks the end state from the outside.  Text fields may name the lab's
parts as ``{lab}`` (the domain), ``{uri}``, ``{dir}`` (the lab directory) and ``{base}``,
``{sn1}``... (a layer file's full path); in ``solution`` and ``setup`` lines every such word is
substituted and then quoted for ``sh``, so the printed lines run as they stand.
"""

from __future__ import annotations

from typing import NamedTuple


class Lesson(NamedTuple):
    """One exercise on a practice lab (``lab-create``'s domain: base <- sn1 <- ... <- snN)."""

    name: str
    title: str
    task: str  # what to do, in words (placeholders allowed)
    goal: tuple[str, ...]  # vda's chain when done, base first, as layer names ("base", "sn1")
    solution: tuple[str, ...]  # sh lines: virsh/qemu-img commands (a "# ..." line explains)
    hints: tuple[str, ...] = ()  # increasing help, one per `lesson hint`
    running: bool = True  # the lab's domain runs (block jobs) or is shut off (qemu-img)
    layers: int = 4
    setup: tuple[str, ...] = ()  # virsh/qemu-img lines run after the lab is built
    keep: tuple[str, ...] | None = None  # snapshots that must still exist (None: not checked)
    vshx: tuple[str, ...] = ()  # the same work in vshx, one command line each (no "vshx")
    explain: str = ""  # the vshx words that `vshx explain` shows this work with
    achieved: str = ""  # what the student achieved, said when the check passes
    order: int = 100  # place in `lesson list`
    stdin: str = ""  # a here-document for the solution lines that read /dev/stdin
    # the hint for a finding of this kind, instead of the general one: "extra:sn2" (a layer
    # still in the chain), "missing:base", "ready", "job", "data", "definition", "stale:sn2"
    # (a snapshot whose moment is gone), "forgotten:sn1" (one deleted that the goal keeps),
    # "unchanged:sn1", "holds:sn1", "changed:base" (see ``holds``);
    # then any kinds the lab must show too, and "!KIND" for one it must not: "extra:sn3
    # !extra:sn2" (the commit stopped one layer short).  Never on a lab nobody touched yet:
    # `lesson check` says so there and gives the first hint
    mistakes: tuple[tuple[str, str], ...] = ()
    # where the goal's data lives, beyond the chain: (LAYER, WAS), LAYER.qcow2 shows what
    # WAS.qcow2 showed when the lab was built ("sn1", "sn3": the data of sn2 and sn3 went down
    # into sn1, a commit; "base", "base": base.qcow2 is as it was, nothing went down into it).
    # Judged once the chain is the goal's: a pull and a commit both reach base <- sn1 <- sn4,
    # only the files that took the data differ.  Findings: "unchanged:sn1" (LAYER still shows
    # what it showed: the data went up instead), "holds:sn1" (it shows other data),
    # "changed:base" (a layer the goal leaves as it was took data in)
    holds: tuple[tuple[str, str], ...] = ()
