"""Lessons on the real daemon: `lesson check` fails before the work, fails with the right hint
after realistic mistakes made with real virsh/qemu-img in a plain shell (at least two per
lesson, one of them changing data), and passes after the solution `lesson solution` prints, run
by `sh -e`.  The check judges the end state, not the route: other correct routes pass too (two
jobs for one, live or offline with qemu-img and a definition edit, vshx's own commands).  Plus a
teacher's own lesson, installed as a distribution on sys.path."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import LAB_PREFIX, URI, run_vshx

from vshx.pluginhost.entrypoints import entry_points

libvirt = pytest.mark.libvirt
ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def metadata_path(tmp: Path) -> list[str]:
    """Where vshx finds its entry points: the installed metadata, or (an editable install made
    before `lesson` existed) a copy of this tree's, first on sys.path."""
    if any(ep.name == "record" for ep in entry_points("vshx")):
        return []
    info = tmp / "site" / "vshx-0.0.0.dist-info"
    info.mkdir(parents=True)
    points = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    lines = "".join(f"{k} = {v}\n" for k, v in points["vshx"].items())
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vshx\nVersion: 0.0.0\n")
    (info / "entry_points.txt").write_text(f"[vshx]\n{lines}")
    return [str(info.parent)]


class Student:
    """One student on one lesson's lab: vshx's lesson commands, and their own shell."""

    def __init__(self, tmp: Path, lesson: str, extra_path: tuple[str, ...] = ()) -> None:
        self.lesson = lesson
        self.lab = f"{LAB_PREFIX}{lesson}"
        self.dir = tmp / "lab"
        path = [*extra_path, *metadata_path(tmp), os.environ.get("PYTHONPATH", "")]
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))
        self.env["LANGUAGE"] = "en"  # the words the tests read (LANGUAGE comes first)

    def vshx(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_vshx(*args, env=self.env, stdin=stdin)

    def start(self) -> str:
        proc = self.vshx("lesson", "start", self.lesson, "--lab", self.lab, "--dir", str(self.dir))
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def reset(self) -> None:
        proc = self.vshx("lesson", "reset")
        assert proc.returncode == 0, proc.stderr

    def fails(self, *said: str) -> str:
        """`lesson check` says not done, with each of ``said`` in its error/hint lines."""
        proc = self.vshx("lesson", "check")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        for words in said:
            assert words in proc.stderr, f"{words!r} not in:\n{proc.stderr}"
        return proc.stderr

    def passes(self) -> str:
        proc = self.vshx("lesson", "check")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"done: lesson {self.lesson}")
        return proc.stdout

    def sh(self, *lines: str) -> None:
        """The student's own commands in a plain shell ({lab}, {sn1}... filled in, quoted)."""
        words = {"lab": self.lab, "uri": URI}
        for layer in ("base", "sn1", "sn2", "sn3", "sn4"):
            words[layer] = str(self.dir / f"{layer}.qcow2")
        quoted = {k: shlex.quote(v) for k, v in words.items()}
        for line in lines:
            text = line.replace("virsh ", "virsh -c {uri} ", 1).format(**quoted)
            proc = subprocess.run(["sh", "-ec", text], capture_output=True, text=True)
            assert proc.returncode == 0, f"{text}\n{proc.stderr}"

    def solution(self) -> None:
        """`lesson solution` is a script: run as it stands, by sh."""
        proc = self.vshx("lesson", "solution")
        assert proc.returncode == 0, proc.stderr
        run = subprocess.run(["sh", "-e"], input=proc.stdout, capture_output=True, text=True)
        assert run.returncode == 0, proc.stdout + run.stderr

    def destroy(self) -> None:
        self.vshx("lab-destroy", self.lab, "--dir", str(self.dir))


@pytest.fixture
def student(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Student]:
    made = Student(tmp_path, request.param)
    yield made
    made.destroy()


def lesson(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def mark(test: Callable[..., None]) -> Callable[..., None]:
        return libvirt(pytest.mark.parametrize("student", [name], indirect=True)(test))

    return mark


DEFINITION = "persistent definition"
# `virsh edit` with an editor that drops the disk's pinned <backingStore> chain (as a student
# does by hand): libvirt then reads the chain from the headers when the domain starts
UNPIN = (
    "import re, sys\n"
    "path = sys.argv[1]\n"
    "xml = open(path).read()\n"
    "xml = re.sub(r'<backingStore.*</backingStore>\\s*', '', xml, count=1, flags=re.S)\n"
    "open(path, 'w').write(xml)\n"
)
POINTER = "`qemu-img rebase -u` only rewrites the pointer"
UPDATE = (
    "virsh update-device {lab} /dev/stdin --config <<EOF\n<disk type='file' device='disk'>"
    "<driver name='qemu' type='qcow2'/><source file='{sn4}'/><target dev='vda' bus='virtio'/>"
    "</disk>\nEOF"
)
UPDATE_BASE = UPDATE.replace("{sn4}", "{base}")


@lesson("commit-middle")
def test_commit_middle(student: Student) -> None:
    out = student.start()
    assert "goal:      base <- sn1 <- sn4 (active)" in out
    student.fails("sn2.qcow2 is still in the chain", "sn3.qcow2 is still in the chain")
    student.sh("virsh blockcommit {lab} vda --base {sn1} --top {sn2} --wait")  # one layer short
    student.fails("sn3.qcow2 is still in the chain", "--top names the highest layer that goes")
    student.sh("virsh blockcommit {lab} vda --base {sn1} --top {sn3} --wait")  # a second job
    student.fails("snapshot sn2 (vda) names sn1.qcow2", f"snapshot-delete {student.lab} sn2")
    student.sh(
        "virsh snapshot-delete {lab} sn2 --metadata", "virsh snapshot-delete {lab} sn3 --metadata"
    )
    done = student.passes()  # two jobs reach the same end state as one: the check accepts it
    assert f"commit {student.lab} vda --base sn1 --top sn3" in done and "explain commit" in done
    student.reset()
    # offline, the pointer before the data (changes what the guest sees)
    student.sh("virsh destroy {lab}", "qemu-img commit {sn3}")
    student.sh("qemu-img rebase -F qcow2 -u -b {sn1} {sn4}")
    student.fails(
        "guest data on vda changed: sn4.qcow2 now backs onto sn1.qcow2 (it was sn3.qcow2)", POINTER
    )
    # the offline route done right: the pointer back, sn2 (holding sn3's data) into sn1, the
    # pointer again, the definition, the metadata: the check accepts it too
    student.sh(
        "qemu-img rebase -F qcow2 -u -b {sn2} {sn4}",
        "qemu-img commit {sn2}",
        "qemu-img rebase -F qcow2 -u -b {sn1} {sn4}",
        UPDATE,
        "virsh snapshot-delete {lab} sn2 --metadata",
        "virsh snapshot-delete {lab} sn3 --metadata",
    )
    student.passes()
    student.reset()
    student.solution()
    student.passes()


@lesson("commit-stepwise")
def test_commit_stepwise(student: Student) -> None:
    student.start()
    student.fails("sn2.qcow2 is still in the chain")
    student.sh("virsh blockcommit {lab} vda --base {sn2} --top {sn3} --wait")  # half of it
    student.fails("sn2.qcow2 is still in the chain", "one job to go", "snapshot sn3 (vda)")
    student.reset()
    student.sh("virsh blockcommit {lab} vda --base {sn1} --top {sn2} --wait")  # wrong order:
    student.sh("virsh blockcommit {lab} vda --base {sn1} --top {sn3} --wait")  # method a
    student.fails("snapshot sn2 (vda)", "snapshot sn3 (vda)")  # metadata left
    student.sh(
        "virsh snapshot-delete {lab} sn2 --metadata", "virsh snapshot-delete {lab} sn3 --metadata"
    )
    student.passes()  # the end state counts, not the route: that order keeps the data too
    student.reset()
    # offline in the wrong order: sn2 into sn1 first, then sn4 pointed at sn1 (without sn3's data)
    student.sh("virsh destroy {lab}", "qemu-img commit {sn2}")
    student.sh("qemu-img rebase -F qcow2 -u -b {sn1} {sn4}")
    student.fails(
        "guest data on vda changed: sn4.qcow2 now backs onto sn1.qcow2 (it was sn3.qcow2)", POINTER
    )
    student.reset()
    student.solution()
    student.passes()


@lesson("active-commit")
def test_active_commit(student: Student) -> None:
    student.start()
    student.fails("sn4.qcow2 is still in the chain")
    student.sh("virsh blockcommit {lab} vda --active --base {base} --wait")  # no --pivot
    student.fails("still READY: it waits for --pivot", "the guest still writes sn4.qcow2 until")
    student.sh("virsh blockjob {lab} vda --pivot")
    student.fails("snapshot sn1 (vda) names base.qcow2", "snapshot sn4 (vda) names sn3.qcow2")
    student.sh(*(f"virsh snapshot-delete {{lab}} sn{k} --metadata" for k in range(1, 5)))
    student.passes()
    student.reset()
    # offline, "merged" by a pointer alone: sn4 straight onto the base (changes the guest's data)
    student.sh("virsh destroy {lab}", "qemu-img rebase -F qcow2 -u -b {base} {sn4}")
    student.fails(
        "guest data on vda changed: sn4.qcow2 now backs onto base.qcow2 (it was sn3.qcow2)",
        POINTER,
        "sn4.qcow2 is still in the chain",
    )
    # the offline route: the pointer back, everything committed into the base with qemu-img,
    # the definition names base.qcow2, the metadata goes: the check accepts it
    student.sh(
        "qemu-img rebase -F qcow2 -u -b {sn3} {sn4}",
        "qemu-img commit -b {base} {sn4}",
        UPDATE_BASE,
        *(f"virsh snapshot-delete {{lab}} sn{k} --metadata" for k in range(1, 5)),
    )
    student.passes()
    student.reset()
    student.solution()
    student.passes()


@lesson("pull")
def test_pull(student: Student) -> None:
    student.start()
    student.fails("sn1.qcow2 is still in the chain")
    student.sh("virsh blockpull {lab} vda --base {sn1} --wait")  # stops too high
    student.fails("sn1.qcow2 is still in the chain", "Pull again with --base")
    student.sh("virsh blockpull {lab} vda --wait")  # no --base: the base goes too
    student.fails("base.qcow2 is no longer in the chain", "that is the flatten lesson")
    student.reset()
    # offline, the pointer only (changes what the guest sees)
    student.sh("virsh destroy {lab}", "qemu-img rebase -F qcow2 -u -b {base} {sn4}")
    student.fails(
        "guest data on vda changed: sn4.qcow2 now backs onto base.qcow2 (it was sn3.qcow2)",
        "without -u, rebase copies the difference into sn4.qcow2",
    )
    # the offline pull: pointer back, then a safe rebase copies sn1..sn3 up; the definition
    student.sh(
        "qemu-img rebase -F qcow2 -u -b {sn3} {sn4}", "qemu-img rebase -F qcow2 -b {base} {sn4}"
    )
    student.fails(DEFINITION)
    student.sh(UPDATE)
    student.passes()
    student.reset()
    student.solution()
    student.passes()


@lesson("flatten")
def test_flatten(student: Student) -> None:
    student.start()
    student.fails("base.qcow2 is still in the chain")
    student.sh("virsh blockpull {lab} vda --base {base} --wait")  # the base stays
    student.fails("base.qcow2 is still in the chain", "a pull stops at --base")
    student.sh("virsh blockcommit {lab} vda --active --wait --pivot")  # into the base instead
    student.fails("sn4.qcow2 is no longer in the chain", "a commit writes into the base")
    student.reset()
    # offline, the backing file dropped by the pointer alone (changes what the guest sees)
    student.sh("virsh destroy {lab}", "qemu-img rebase -u -b '' {sn4}")
    student.fails("sn4.qcow2 now has no backing file (it was sn3.qcow2)", POINTER)
    # the offline flatten: pointer back, then a safe rebase onto nothing; the definition
    student.sh("qemu-img rebase -F qcow2 -u -b {sn3} {sn4}", "qemu-img rebase -b '' {sn4}", UPDATE)
    student.passes()
    student.reset()
    student.solution()
    student.passes()


@lesson("snapshot-metadata")
def test_snapshot_metadata(student: Student) -> None:
    out = student.start()
    assert "chain now: base <- sn1 <- sn4 (active)" in out  # the setup merged already
    student.fails("snapshot sn2 (vda) names sn1.qcow2", "snapshot sn3 (vda) names sn2.qcow2")
    student.sh("virsh snapshot-delete {lab} sn2 --metadata")  # one of two
    # libvirt 9.0 re-points sn3 at sn2's file (as if the files had been merged): still stale
    student.fails("snapshot sn3 (vda) names sn1.qcow2", f"snapshot-delete {student.lab} sn3")
    student.sh("virsh snapshot-delete {lab} sn1 --metadata")  # the source's cleanup by overlay
    student.sh("virsh snapshot-delete {lab} sn3 --metadata")
    student.fails("snapshot sn1 was deleted, yet its moment still existed (base.qcow2)")
    student.reset()
    # --metadata forgotten: libvirt merges sn1.qcow2 into base.qcow2, sn1's moment (data-changing)
    student.sh("virsh snapshot-delete {lab} sn1")
    student.fails(
        "sn1.qcow2 is no longer in the chain",
        "without --metadata, virsh snapshot-delete",
        "snapshot sn1 was deleted, and its moment with it (base.qcow2 no longer shows it)",
        "snapshot sn3 (vda) names sn2.qcow2, which can no longer be read",
    )
    student.reset()
    student.solution()
    student.passes()


@lesson("offline-commit")
def test_offline_commit(student: Student) -> None:
    student.start()
    student.fails("sn2.qcow2 is still in the chain")
    student.sh("qemu-img rebase -F qcow2 -u -b {sn1} {sn3}")  # the pointer before the data
    student.fails(
        "guest data on vda changed: sn3.qcow2 now backs onto sn1.qcow2 (it was sn2.qcow2)",
        "It is right only onto sn1.qcow2, and only after qemu-img commit",
    )
    student.sh("qemu-img commit {sn2}")  # sn1 now shows what sn2 showed: the data is back
    err = student.fails(DEFINITION, "update-device")  # the source's two steps are not enough
    assert "guest data" not in err
    student.sh(UPDATE)
    student.fails("snapshot sn2 (vda) names sn1.qcow2")
    student.sh("virsh snapshot-delete {lab} sn2 --metadata")
    student.passes()
    student.reset()
    student.solution()
    student.passes()


@lesson("safe-rebase")
def test_safe_rebase(student: Student) -> None:
    student.start()
    student.fails("sn2.qcow2 is still in the chain")
    student.sh("qemu-img rebase -F qcow2 -u -b {sn1} {sn3}")  # -u: pointer only
    student.fails("guest data on vda changed", "without -u, rebase copies the difference")
    student.sh(
        "qemu-img rebase -F qcow2 -u -b {sn2} {sn3}", "qemu-img rebase -F qcow2 -b {sn1} {sn3}"
    )
    student.fails(DEFINITION)  # the data is right; libvirt would start on the old chain
    editor = student.dir.parent / "unpin.py"  # virsh edit, the way a student would fix it
    editor.write_text(UNPIN)
    student.sh(f"EDITOR={shlex.quote(f'{sys.executable} {editor}')} virsh edit {{lab}}")
    student.passes()
    student.reset()
    student.solution()
    student.passes()


@lesson("snapshot-delete")
def test_snapshot_delete(student: Student) -> None:
    student.start()
    student.fails("sn2.qcow2 is still in the chain")
    student.sh("virsh snapshot-delete {lab} sn3")  # the wrong snapshot
    student.fails("sn3.qcow2 is no longer in the chain", "the task was sn2")
    student.reset()
    student.sh("virsh snapshot-delete {lab} sn2 --metadata")  # the name only
    student.fails("sn2.qcow2 is still in the chain", "--metadata only forgets a name")
    student.sh("virsh blockcommit {lab} vda --base {sn1} --top {sn2} --wait")  # as the hint says
    student.passes()
    student.reset()
    student.solution()
    student.passes()


EVERY_LESSON = [
    "commit-middle",
    "commit-stepwise",
    "active-commit",
    "pull",
    "flatten",
    "snapshot-metadata",
    "offline-commit",
    "safe-rebase",
    "snapshot-delete",
]


def test_every_lesson_is_tried_untouched() -> None:
    from vshx_plugins.lessons_builtin import LESSONS

    assert sorted(x.name for x in LESSONS) == sorted(EVERY_LESSON)


def test_a_mistake_needs_every_kind_it_names() -> None:
    """A mistake's key: the finding's kind, then kinds the lab must show too, !KIND for one it
    must not (commit-middle's "sn3, not sn2" only with sn2 gone)."""
    from vshx_plugins.lesson_check import Finding, mistake

    mistakes = (("extra:sn3 !extra:sn2", "short"), ("extra:sn3", "general"), ("data", "data"))
    sn3, sn2 = Finding("r", "h", "extra:sn3"), Finding("r", "h", "extra:sn2")
    assert mistake(sn3, {"extra:sn3", "extra:sn2"}, mistakes) == "general"
    assert mistake(sn3, {"extra:sn3"}, mistakes) == "short"
    assert mistake(sn2, {"extra:sn3", "extra:sn2"}, mistakes) == ""
    assert mistake(Finding("r", "h", "data"), {"data"}, mistakes) == "data"
    assert mistake(Finding("r", "h", ""), {""}, mistakes) == ""


def first_hint(student: Student) -> str:
    """The lesson's first hint as `lesson hint` words it on this lab."""
    from vshx_plugins import lesson as command
    from vshx_plugins.lessons_builtin import LESSONS

    one = next(x for x in LESSONS if x.name == student.lesson)
    return command.text(one.hints[0], command.values(one, student.lab, URI, str(student.dir)))


@lesson("commit-middle")
def test_an_untouched_lab_gets_the_first_step_not_a_mistake(student: Student) -> None:
    """atk5 F5: before any work, the check says nothing was done and gives the first hint; "sn3,
    not sn2 / one more commit" only once the chain shows that commit (sn2 gone, sn3 left)."""
    student.start()
    err = student.fails(
        f"error: nothing was done yet on {student.lab}: it is as the lesson built it (vda is "
        "base <- sn1 <- sn2 <- sn3 <- sn4 (active))",
        f"hint: {first_hint(student)}",
        "sn2.qcow2 is still in the chain",  # what differs from the goal, still said
    )
    assert "sn3, not sn2" not in err and "One more commit" not in err
    student.sh("virsh snapshot-delete {lab} sn1 --metadata")  # something done, but no merge
    err = student.fails("sn2.qcow2 is still in the chain", "sn3.qcow2 is still in the chain")
    assert "nothing was done yet" not in err and "sn3, not sn2" not in err
    student.sh("virsh blockcommit {lab} vda --base {sn1} --top {sn2} --wait")  # one layer short
    student.fails("--top names the highest layer that goes: sn3, not sn2. One more commit")


@libvirt
@pytest.mark.parametrize("name", EVERY_LESSON)
def test_every_lesson_says_so_on_an_untouched_lab(tmp_path: Path, name: str) -> None:
    """No lesson's check assumes a mistake on a lab nobody touched: it says nothing was done
    yet and gives the lesson's first hint, and none of the lesson's mistake hints."""
    from vshx_plugins import lesson as command
    from vshx_plugins.lessons_builtin import LESSONS

    one = next(x for x in LESSONS if x.name == name)
    student = Student(tmp_path, name)
    try:
        student.start()
        err = student.fails(
            f"nothing was done yet on {student.lab}", f"hint: {first_hint(student)}"
        )
        found = command.values(one, student.lab, URI, str(student.dir))
        for _kind, hint in one.mistakes:
            assert command.text(hint, found) not in err
        assert err.count("hint: ") == 1, err
    finally:
        student.destroy()


def snapshot_moments(student: Student) -> dict[str, str]:
    """`vshx snapshot-list --json`: each snapshot's moment on vda as vshx judges it."""
    proc = student.vshx("snapshot-list", student.lab, "--json")
    assert proc.returncode == 0, proc.stderr
    return {s["name"]: s["disks"]["vda"]["moment"] for s in json.loads(proc.stdout)["snapshots"]}


@libvirt
@pytest.mark.parametrize("name", ["offline-commit", "commit-middle"])
def test_done_says_which_moments_vshx_cannot_prove(tmp_path: Path, name: str) -> None:
    """atk5 F6: after the lesson's own (virsh/qemu-img) solution the check passes, and says which
    moments vshx calls unknown (only the lab's recorded data shows them: vshx's snapshot-delete
    refuses them) and how vshx comes to know them: the same merge made with vshx."""
    from vshx_plugins.lessons_builtin import LESSONS

    one = next(x for x in LESSONS if x.name == name)
    student = Student(tmp_path, name)
    try:
        student.start()
        # past vshx's settle window after the snapshots, so the merge's writes are seen
        time.sleep(3.5)
        student.solution()
        done = student.passes()
        moments = snapshot_moments(student)
        unknown = [snap for snap, state in moments.items() if state == "unknown"]
        assert unknown, moments  # the lab is the one the finding is about
        assert (
            f"note: `vshx snapshot-list {student.lab}` calls the moments of "
            + ", ".join(unknown)
            + " unknown:"
            in done
        ), done
        assert "snapshot-delete refuses them" in done
        refused = student.vshx("snapshot-delete", student.lab, unknown[0], "--dry-run")
        assert refused.returncode != 0 and "cannot prove" in refused.stderr, refused.stderr
        assert "`vshx lesson reset`, then the same in vshx" in done
        # the step the check teaches: the same merge with vshx, which keeps its record
        student.reset()
        for line in one.vshx:
            proc = student.vshx(*shlex.split(line.format(lab=student.lab)))
            assert proc.returncode == 0, proc.stderr
        done = student.passes()
        assert "note:" not in done, done
        assert "unknown" not in snapshot_moments(student).values()
    finally:
        student.destroy()


@libvirt
@pytest.mark.parametrize(
    "name",
    [
        "commit-middle",
        "active-commit",
        "pull",
        "flatten",
        "offline-commit",
        "safe-rebase",
        "snapshot-delete",
    ],
)
def test_the_vshx_equivalent_reaches_the_goal(tmp_path: Path, name: str) -> None:
    """What `lesson check` calls the same in vshx does pass the check; its explain changes
    nothing."""
    from vshx_plugins.lessons_builtin import LESSONS

    one = next(x for x in LESSONS if x.name == name)
    student = Student(tmp_path, name)
    try:
        student.start()
        explained = student.vshx("explain", *shlex.split(one.explain.format(lab=student.lab)))
        assert explained.returncode == 0, explained.stderr
        student.fails()
        for line in one.vshx:
            proc = student.vshx(*shlex.split(line.format(lab=student.lab)))
            assert proc.returncode == 0, proc.stderr
        done = student.passes()
        assert f"explain {one.explain.format(lab=student.lab)}" in done
    finally:
        student.destroy()


@libvirt
def test_list_hint_solution_and_progress(tmp_path: Path) -> None:
    student = Student(tmp_path, "pull")
    try:
        listed = student.vshx("lesson", "list")
        assert listed.returncode == 0
        for name in ("commit-middle", "offline-commit", "safe-rebase", "snapshot-delete"):
            assert name in listed.stdout
        student.start()
        hints = [student.vshx("lesson", "hint").stdout for _ in range(4)]
        assert hints[0].startswith("hint 1/3") and hints[2].startswith("hint 3/3")
        assert hints[3] == hints[2]  # the last hint again
        assert "blockpull" in student.vshx("lesson", "solution").stdout
        assert " started *" in student.vshx("lesson", "list").stdout
        student.solution()
        student.passes()
        assert " done *" in student.vshx("lesson", "list").stdout
        wrong = student.vshx("lesson", "start", "no-such-lesson")
        assert wrong.returncode == 2 and "commit-middle" in wrong.stderr
    finally:
        student.destroy()


@libvirt
def test_a_teachers_lesson_from_an_installed_package(tmp_path: Path) -> None:
    """A teacher's distribution (dist-info + entry point) adds a lesson through the hook."""
    site = FIXTURES / "teacher"
    student = Student(tmp_path, "teacher-commit-top", extra_path=(str(site),))
    try:
        listed = student.vshx("lesson", "list")
        assert "teacher-commit-top" in listed.stdout, listed.stderr
        assert "commit-middle" in listed.stdout  # vshx's own lessons stay
        out = student.start()
        assert "goal:      base <- sn1 <- sn2 <- sn4 (active)" in out
        student.fails("sn3.qcow2 is still in the chain")
        student.solution()
        student.passes()
    finally:
        student.destroy()


def test_every_solution_is_a_script_sh_reads() -> None:
    """Placeholders filled and quoted, here-documents closed, whatever the directory holds."""
    from vshx_plugins import lesson as command
    from vshx_plugins.lessons_builtin import LESSONS

    for one in LESSONS:
        found = command.values(one, "my lab", "qemu:///system", '/tmp/it\'s a "lab" & more')
        text = command.script(one, found)
        assert "{" not in text.replace("{uri}", ""), text
        proc = subprocess.run(["sh", "-n"], input=text, capture_output=True, text=True)
        assert proc.returncode == 0, text + proc.stderr
        assert "'my lab'" in text
        assert all(hint for hint in one.hints) and len(one.hints) >= 2


def test_every_lesson_text_hint_and_finding_has_a_zh_cn_translation() -> None:
    """Lesson texts, hints, solution comments and the check's findings: all in zh_CN, with
    the same placeholders (scripts/lesson_messages.py lists them for translators)."""
    import gettext
    import re
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from lesson_messages import messages
    from vshx_plugins.lesson_i18n import DOMAIN, LOCALE

    zh = gettext.translation(DOMAIN, LOCALE, languages=["zh_CN"])
    missing = []
    for message in messages():
        said = zh.gettext(message)
        if said == message and not message.startswith(("virsh ", "qemu-img ")):
            missing.append(message)
        words = set(re.findall(r"\{\w*\}", message))
        assert set(re.findall(r"\{\w*\}", said)) == words, message
    assert missing == []


def test_the_language_follows_lang(tmp_path: Path) -> None:
    student = Student(tmp_path, "pull")
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        student.env.pop(variable, None)
    student.env["LANG"] = "zh_CN.UTF-8"
    listed = student.vshx("lesson", "list")
    assert "把 sn1..sn3 向上拉进活动层" in listed.stdout
    student.env["LANG"] = "C.UTF-8"
    assert "pull sn1..sn3 up into" in student.vshx("lesson", "list").stdout


def test_two_students_on_one_host_have_their_own_labs_and_progress(monkeypatch) -> None:
    """Under sudo, the student is SUDO_USER: default lab names and progress files differ."""
    from vshx_plugins import lesson as command
    from vshx_plugins.lessons_builtin import LESSONS

    seen = set()
    for user in ("alice", "bob"):
        monkeypatch.setenv("SUDO_USER", user)
        seen.add((command.default_lab(LESSONS[0]), command.progress_name()))
        command.save_progress({"lessons": {"pull": {"lab": f"pull-{user}"}}, "current": "pull"})
    assert seen == {
        ("commit-middle-alice", "progress-alice.json"),
        ("commit-middle-bob", "progress-bob.json"),
    }
    monkeypatch.setenv("SUDO_USER", "alice")
    assert command.progress()["lessons"]["pull"]["lab"] == "pull-alice"
    monkeypatch.setenv("SUDO_USER", "bob; rm -rf /")
    assert command.default_lab(LESSONS[0]) == "commit-middle-bob--rm--rf--"


@libvirt
@pytest.mark.parametrize(
    ("name", "lines", "said"),
    [
        (  # the finding's route: a pull reaches base <- sn1 <- sn4 too, sn1.qcow2 untouched
            "commit-middle",
            ("virsh blockpull {lab} vda --base {sn1} --wait",),
            (
                "error: sn1.qcow2 still shows what it showed when the lab was built: no data "
                "went down into it, yet the goal has it show what sn3.qcow2 showed",
                "hint: you pulled: the data of sn2 and sn3 went up into sn4",
                "The lesson asks for a commit",
            ),
        ),
        (  # the other way round: the pull lesson's chain reached by a commit into the base
            "pull",
            (
                "virsh blockcommit {lab} vda --base {base} --top {sn3} --wait",
                *(f"virsh snapshot-delete {{lab}} sn{k} --metadata" for k in (1, 2, 3)),
            ),
            (
                "error: base.qcow2 took data in: it no longer shows what it showed when the lab "
                "was built, and the goal leaves it as it was",
                "hint: you committed: the data of sn1, sn2 and sn3 went down into base.qcow2",
                "The lesson asks for a pull",
            ),
        ),
        (  # offline-commit's chain by the safe-rebase lesson's route (sn2 up into sn3)
            "offline-commit",
            ("qemu-img rebase -F qcow2 -b {sn1} {sn3}", UPDATE),
            ("error: sn1.qcow2 still shows what it showed", "hint: you rebased: sn2's data"),
        ),
        (  # safe-rebase's chain by offline-commit's route (sn2 down into sn1)
            "safe-rebase",
            (
                "qemu-img commit {sn2}",
                "qemu-img rebase -F qcow2 -u -b {sn1} {sn3}",
                UPDATE,
                "virsh snapshot-delete {lab} sn2 --metadata",
            ),
            ("error: sn1.qcow2 took data in", "hint: you committed: sn2's data went down"),
        ),
    ],
)
def test_the_other_direction_is_not_the_lessons_merge(
    tmp_path: Path, name: str, lines: tuple[str, ...], said: tuple[str, ...]
) -> None:
    """atk5 F23: a pull and a commit reach the same chain with the same guest data; the check
    judges the end state the lesson asks for (which file took the data, and so which moments
    survive) and says which way the student went, never "merged into sn1" after a pull."""
    student = Student(tmp_path, name)
    try:
        student.start()
        student.sh(*lines)
        err = student.fails(*said)
        assert "is still in the chain" not in err and "guest data" not in err, err
        assert "nothing was done yet" not in err
    finally:
        student.destroy()


@libvirt
def test_a_lesson_started_again_is_not_listed_done(tmp_path: Path) -> None:
    """atk5 F14: `lesson start` on a new lab makes the lesson "started" again (it said "done"
    with a lab where nothing was done); the list still says where it was done before."""
    first = Student(tmp_path / "one", "pull")
    again = Student(tmp_path / "two", "pull")
    again.lab += "-2"
    try:
        first.start()
        first.solution()
        first.passes()
        assert " done *" in first.vshx("lesson", "list").stdout
        again.start()
        listed = again.vshx("lesson", "list").stdout
        row = next(line for line in listed.splitlines() if line.split()[:1] == ["pull"])
        assert f"started (done before on {first.lab}) *" in row and again.lab in row, listed
        assert " done *" not in listed
        again.fails("sn1.qcow2 is still in the chain")
        again.solution()
        again.passes()
        assert " done *" in again.vshx("lesson", "list").stdout
    finally:
        first.destroy()
        again.destroy()


def hint_of(proc: subprocess.CompletedProcess[str]) -> str:
    return next(line for line in proc.stderr.splitlines() if line.startswith("hint: "))


@libvirt
def test_another_users_lab_gets_a_hint_with_the_commands_own_options(tmp_path: Path) -> None:
    """atk5 F16: a student's `lesson start` that meets another user's lab is told to pick
    --lab (or --dir), never --force (lesson has none); lab-destroy's hint does not tell to pick
    a name; lab-create keeps --force."""
    student = Student(tmp_path, "pull")
    other = Student(tmp_path / "mine", "pull")
    other.lab += "-mine"
    student.env["SUDO_USER"] = other.env["SUDO_USER"] = "vshxbob"
    alice = dict(student.env, SUDO_USER="vshxalice")
    made = run_vshx(
        "lab-create", student.lab, "--dir", str(student.dir), "--layers", "2", "--shut-off",
        env=alice,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    try:
        start = ("lesson", "start", "pull", "--lab", student.lab, "--dir", str(other.dir))
        proc = student.vshx(*start)
        assert proc.returncode == 1 and "belongs to vshxalice" in proc.stderr, proc.stderr
        hint = hint_of(proc)
        assert f"--lab {student.lab}-vshxbob" in hint and "--force" not in hint, hint
        assert "--dir" not in hint, hint  # another directory does not help with a domain's name
        mine = ("lesson", "start", "pull", "--lab", other.lab, "--dir", str(student.dir))
        proc = other.vshx(*mine)  # a name of one's own, in her directory
        assert proc.returncode == 1 and "the lab directory" in proc.stderr, proc.stderr
        hint = hint_of(proc)
        assert f"--dir {student.dir}-vshxbob" in hint and "--force" not in hint, hint
        proc = student.vshx("lab-destroy", student.lab, "--dir", str(student.dir))
        assert proc.returncode == 1
        hint = hint_of(proc)
        assert "not yours to remove" in hint and "name (e.g." not in hint, hint
        proc = student.vshx("lab-create", student.lab, "--dir", str(student.dir))
        assert proc.returncode == 1 and "--force" in hint_of(proc), proc.stderr
        assert f"{student.lab}-vshxbob" in hint_of(proc)
    finally:
        run_vshx("lab-destroy", student.lab, "--dir", str(student.dir), env=alice)
        other.destroy()
