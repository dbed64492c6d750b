"""Plans and Steps: what a command will do, as one list that is both printed and run.

A merge command never calls libvirt or qemu-img itself; it builds a Plan.  ``--dry-run`` prints the
Plan as a shell script; a real run executes the very same Steps, so what vshx teaches cannot
drift from what it does.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from vshx.spec.render import comment as comment  # the one escaper for `#` lines
from vshx.spec.render import comments as comments
from vshx.spec.render import printable as printable

if TYPE_CHECKING:
    from vshx.plans.target import Target
    from vshx.storage.chain import Chain, Layer
    from vshx.storage.libvirt_lazy import libvirt
    from vshx.storage.moments import Verdict

HEREDOC_END = "VSHX_EOF"


def shell_line(argv: Sequence[str]) -> str:
    """One argv as a shell command, every argument quoted by shell rules."""
    return " ".join(shlex.quote(a) for a in argv)


def with_heredoc(line: str, body: str | None) -> str:
    """``line`` fed ``body`` on stdin, as a quoted here-document (nothing in it expands)."""
    if body is None:
        return line
    body = body if body.endswith("\n") else body + "\n"
    # a body line equal to the delimiter (for sh, or for vshx's reader, which drops a CR)
    # would end the here-document early and run the rest as commands
    lines = {text.rstrip("\r") for text in body.split("\n")} | set(body.splitlines())
    end, number = HEREDOC_END, 0
    while end in lines:
        number += 1
        end = f"{HEREDOC_END}_{number}"
    return f"{line} <<'{end}'\n{body}{end}"


class Step:
    """One action: a description, the equivalent command line, and how to perform it.

    Without ``action`` the step runs ``argv`` itself (so the teaching line is the real one);
    with it (a libvirt API call, a block job with events) ``argv`` is the virsh equivalent.
    ``stdin`` is fed to the command and printed as a here-document.  ``shell`` replaces the
    printed line where the check it performs in Python needs a pipe in sh (free space); a
    callable makes it when it is printed (a digest a real run never prints).
    A step other than ``virsh`` runs where the image files are: on a ``qemu+ssh://`` URI it
    is printed (and run) through ssh, unless ``here`` (vshx's own files on this machine).
    """

    def __init__(
        self,
        description: str,
        argv: list[str],
        action: Callable[[], None] | None = None,
        stdin: str | None = None,
        underneath: list[str] | None = None,
        shell: str | Callable[[], str] | None = None,
        changes: bool = True,
        here: bool = False,
    ) -> None:
        self.description = description
        # what --teach and explain add: why the flags, the libvirt call and QMP beneath it
        self.underneath = list(underneath or [])
        self.argv = argv
        self.action = action
        self.stdin = stdin
        self._shell = shell  # the printed line when it needs a pipe (a check); else from argv
        self.changes = changes  # False for a check: nothing for the journal to recover
        self.here = here  # runs on this machine whatever the URI (vshx's journal)
        # the domain whose QEMU must write its caches down before this step (an rm of a file
        # its chain read), and whether this step is that flush (vshx.plans.flush)
        self.flush = ""
        self.flush_step = False
        # the merged-away layer this ``rm`` deletes (vshx.merging.deletion): the journal keeps
        # the plan's list of them, so that recover finishes the deletions of a killed plan
        self.removes = ""
        # a ``qemu-img bitmap`` step of an offline merge (vshx.merging.bitmaps): (what it does:
        # disable, add, merge or enable; the file; the bitmap), kept in the journal so that
        # recover can settle the bitmaps of a killed plan
        self.bitmap: tuple[str, str, str] | None = None
        # a live block job that ends by itself (a commit below the active layer, a pull): the
        # canonical paths of the layers it takes out of the chain, kept in the journal, so
        # that recover waits for such a job a killed vshx left (vshx.plans.blockjob.wait_step)
        self.completes: list[str] | None = None
        # a live block job this step starts and does not wait for (--background): the plan
        # ends while it runs (vshx.plans.ledger.remember_running)
        self.background = False
        # a check of the state the plan was made on (plans/state_checks.py), put first once
        self.state_check = False
        # the file a step creates (a new overlay, vshx.merging.checks.new_file_step): the
        # journal keeps the plan's list of them, so that recover removes those never used
        self.creates = ""
        # an offline plan's step that makes the persistent definition name the chain its
        # headers now form (vshx.merging.definition): recover does the same for a killed plan
        self.names_chain = False

    @property
    def shell(self) -> str | None:
        """The printed line of a check that needs a pipe in sh; None: the argv's line."""
        return self._shell() if callable(self._shell) else self._shell

    @property
    def on_files(self) -> bool:
        """A step that runs where the image files are (qemu-img, rm, a check), not virsh: on a
        remote URI it is printed and run through ssh (vshx.storage.host)."""
        return bool(self.argv) and self.argv[0] != "virsh" and not self.here

    def equivalent(self) -> str:
        from vshx.storage import host

        where = host.current()
        if not self.on_files or where.local:
            return with_heredoc(self.shell or shell_line(self.argv), self.stdin)
        fed = self.stdin is not None
        if self.shell:
            return with_heredoc(shell_line(where.printed_shell(self.shell, fed)), self.stdin)
        return with_heredoc(shell_line(where.printed(self.argv, fed)), self.stdin)

    def run(self) -> None:
        if self.action is not None:
            self.action()
        elif self.on_files:
            from vshx.storage import qemuimg

            qemuimg.run(self.argv, stdin=self.stdin)
        else:
            from vshx.storage import qemuimg

            qemuimg.run_here(self.argv, stdin=self.stdin)


class Plan:
    """An ordered list of Steps plus explanatory notes."""

    def __init__(self, title: str, method: str = "", target: Target | None = None) -> None:
        self.title = title
        self.target = target  # the merging Target it works on: hooks, journal
        # the domain a plan without a target changes (its snapshots, files only it named):
        # what its printed script checks first (plans/state_checks.py)
        self.domain: libvirt.virDomain | None = None
        self.intent: dict[str, object] = {}  # what recover should finish, e.g. {"pivot": True}
        self.before: Chain | None = None  # the chain now, and the chain the steps will leave
        self.after: Chain | None = None
        self.steps: list[Step] = []
        self.notes: list[str] = []
        # `keeps: ...`/`loses: ...`: the snapshots whose moments the plan keeps and loses
        # (vshx.merging.moments), and the verdicts it records when it completes
        self.keeps: list[str] = []
        self.losing: list[str] = []  # the names of the snapshots whose moments it loses
        self.verdicts: list[Verdict] | None = None
        # the same before its ``rm`` steps: what ``recover`` records when its job completed
        # after vshx was killed (deleted or not, a file's existence then decides)
        self.undeleted: list[Verdict] | None = None
        # (before, after) per disk of a plan over several disks, where before/after is unset
        self.chains: list[tuple[Chain, Chain]] = []
        # the writes, for the views of the disk's files: (W, S) = file W shows what S showed
        self.writes: list[tuple[Layer, Layer]] = []
        self.method = method  # e.g. "live: libvirt block job" or "offline: qemu-img"

    def add(self, step: Step) -> Step:
        self.steps.append(step)
        return step

    @property
    def written(self) -> list[Layer]:
        """The files whose view its data steps change (a write that is not a file's own)."""
        return [w for w, shows in self.writes if w.canonical != shows.canonical]

    def prediction(self) -> list[str]:
        """`# before:`/`# after:` lines, when the plan knows both chains, then `# keeps:` and
        `# loses:` (snapshots' moments)."""
        lines = [comment(line) for line in self.keeps]
        if self.before is None or self.after is None:
            return lines
        return [
            comment(f"before: {self.before.arrows()}"),
            comment(f"after:  {self.after.arrows()}"),
            *lines,
        ]

    def script(self, explain: bool = False) -> str:
        """The plan as a runnable POSIX shell script: '#' lines explain, others are commands.

        ``explain`` adds, under each step, why its flags are there and what runs beneath it.
        """
        lines = ["#!/bin/sh", comment(f"vshx plan: {self.title}")]
        if self.method:
            lines.append(comment(f"method: {self.method}"))
        from vshx.storage import host

        where = host.current()
        if not where.local and any(step.on_files for step in self.steps):
            lines.append(
                comment(f"the image files are on {where.name}: those steps run there through ssh")
            )
        lines += [comment(note) for note in self.notes]
        lines += self.prediction()
        for number, step in enumerate(self.steps, 1):
            lines.append(comment(f"step {number}: {step.description}"))
            if explain:
                lines += [comment(f"  {line}") for line in step.underneath]
            lines.append(step.equivalent())
        return "\n".join(lines) + "\n"


# virsh's positional slots, in order, for the commands vshx prints (virsh(1) of libvirt 9.0)
VIRSH_SLOTS: dict[str, tuple[str, ...]] = {
    "blockcommit": ("domain", "path"),
    "blockcopy": ("domain", "path", "dest"),
    "blockjob": ("domain", "path"),
    "blockpull": ("domain", "path"),
    "define": ("file",),
    "destroy": ("domain",),
    "domblklist": ("domain",),
    "metadata": ("domain",),
    "resume": ("domain",),
    "snapshot-create": ("domain", "xmlfile"),
    "snapshot-delete": ("domain", "snapshotname"),
    "snapshot-list": ("domain",),
    "start": ("domain",),
    "suspend": ("domain",),
    "undefine": ("domain",),
    "update-device": ("domain", "file"),
}


def virsh(uri: str, *args: str) -> list[str]:
    """The argv of the virsh command equivalent to a libvirt API call on this connection.

    ``args`` is the command then its positional words (in virsh's order), then options.  A
    positional word that starts with ``-`` (a domain renamed ``--x``, a snapshot named
    ``--current``) would be read by virsh as an option, so it is printed in the named form
    ``--SLOT WORD``: virsh takes the word after a valued option as its value, whatever it is.
    """
    if not args:
        return ["virsh", "-c", uri]
    command, rest = args[0], args[1:]
    slots = VIRSH_SLOTS.get(command, ())[: len(rest)]
    words = [command]
    for slot, word in zip(slots, rest, strict=False):
        words += [f"--{slot}", word] if word.startswith("-") else [word]
    return ["virsh", "-c", uri, *words, *rest[len(slots) :]]
