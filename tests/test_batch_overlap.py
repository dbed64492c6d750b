"""A batch's merge lines on different domains overlap their block jobs (plans/overlap.py),
with every line's checks, output in line order, and a failing line stopping the script."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import (
    URI,
    Lab,
    chain_files,
    destroy_lab,
    make_lab,
    make_overlay,
    qemu_check,
    virsh,
)

from vshx.errors import VshxError
from vshx.frontends.batch_overlap import LineStream, Output
from vshx.plans import overlap


def _job_running(lab: Lab) -> bool:
    info = subprocess.run(
        ["virsh", "-c", URI, "blockjob", lab.name, "vda", "--info"], capture_output=True, text=True
    )
    return "Block Commit" in info.stdout + info.stderr


def run_batch(script: Path) -> subprocess.CompletedProcess[str]:
    """``vshx -f SCRIPT``, as a user runs a batch."""
    return subprocess.run(
        [sys.executable, "-m", "vshx", "-c", URI, "-f", str(script)],
        capture_output=True,
        text=True,
    )


def _labs(tmp_path: Path, count: int) -> list[Lab]:
    return [make_lab(tmp_path, dirname=f"lab{i}") for i in range(count)]


def _check_files(lab: Lab) -> None:
    for name in ("base", "sn1", "sn4"):
        qemu_check(lab.layer(name))


@pytest.mark.libvirt
def test_a_later_line_runs_while_an_earlier_lines_job_copies(tmp_path: Path):
    """Line 1's job is held at 1 KiB/s; line 2 (another domain) is checked, runs and ends
    while it copies; line 1 then ends once its speed limit is lifted.  Guest data unchanged,
    images clean, output in line order."""
    slow, fast = labs = _labs(tmp_path, 2)
    try:
        before = [lab.guest_hash(tmp_path) for lab in labs]
        script = tmp_path / "merge.vshx"
        script.write_text(
            f"commit {slow.name} vda --base sn1 --top sn3 --bandwidth 1024 --bytes\n"
            f"commit {fast.name} vda --base sn1 --top sn3\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "vshx", "-c", URI, "-x", "-f", str(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            for _ in range(1200):  # line 2 done while line 1's job still copies
                if "sn2.qcow2" not in chain_files(fast.active):
                    break
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.2)
            else:
                raise AssertionError("line 2 never ran while line 1's job was copying")
            assert _job_running(slow), "line 1's job should still be copying at 1 KiB/s"
            assert "sn2.qcow2" in chain_files(slow.active)
        finally:
            virsh("blockjob", slow.name, "vda", "--bandwidth", "0")  # line 1 may end now
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        assert [line for line in err.splitlines() if line.startswith("+ ")] == [
            f"+ commit {slow.name} vda --base sn1 --top sn3 --bandwidth 1024 --bytes",
            f"+ commit {fast.name} vda --base sn1 --top sn3",
        ]
        assert out.index(f"({slow.name} vda)") < out.index(f"({fast.name} vda)")
        assert err.index(f"+ commit {slow.name}") < err.index(f"+ commit {fast.name}")
        for lab, seen in zip(labs, before, strict=True):
            assert chain_files(lab.active) == ["sn4.qcow2", "sn1.qcow2", "base.qcow2"]
            assert lab.guest_hash(tmp_path) == seen
            _check_files(lab)
    finally:
        for lab in labs:
            destroy_lab(lab)


@pytest.mark.libvirt
def test_a_failing_line_stops_the_lines_after_it(tmp_path: Path):
    """Line 2 fails (no such domain) while line 1's job may still run: line 1 ends as it
    would alone, line 3 never starts (its domain keeps every layer), the error names line 2."""
    first, third = labs = _labs(tmp_path, 2)
    try:
        before = [lab.guest_hash(tmp_path) for lab in labs]
        script = tmp_path / "merge.vshx"
        script.write_text(
            f"commit {first.name} vda --base sn1 --top sn3\n"
            f"commit {first.name}-no-such-domain vda --base sn1 --top sn3\n"
            f"commit {third.name} vda --base sn1 --top sn3\n"
        )
        proc = run_batch(script)
        assert proc.returncode == 1, proc.stderr
        assert f"{script}:2: error:" in proc.stderr
        assert f"{script}:3:" not in proc.stderr
        assert f"({third.name} vda)" not in proc.stdout
        assert chain_files(first.active) == ["sn4.qcow2", "sn1.qcow2", "base.qcow2"]
        assert chain_files(third.active) == [f"sn{i}.qcow2" for i in (4, 3, 2, 1)] + ["base.qcow2"]
        for lab, seen in zip(labs, before, strict=True):
            assert lab.guest_hash(tmp_path) == seen
            _check_files(lab)
    finally:
        for lab in labs:
            destroy_lab(lab)


@pytest.mark.libvirt
def test_a_line_refused_by_its_checks_stops_the_line_checked_beside_it(tmp_path: Path):
    """Line 1 is refused by its usage scan (an image beside it uses its base) while line 2
    may already be checked: line 2 changes nothing and says nothing, as if never run."""
    refused, second = labs = _labs(tmp_path, 2)
    try:
        make_overlay(refused.dir / "other user.qcow2", "sn1.qcow2")
        before = [lab.guest_hash(tmp_path) for lab in labs]
        script = tmp_path / "merge.vshx"
        script.write_text("".join(f"commit {lab.name} vda --base sn1 --top sn3\n" for lab in labs))
        proc = run_batch(script)
        assert proc.returncode == 1, proc.stderr
        assert f"{script}:1: error: refusing:" in proc.stderr
        assert f"{script}:2:" not in proc.stderr and second.name not in proc.stdout
        everything = [f"sn{i}.qcow2" for i in (4, 3, 2, 1)] + ["base.qcow2"]
        for lab, seen in zip(labs, before, strict=True):
            assert chain_files(lab.active) == everything
            assert lab.guest_hash(tmp_path) == seen
            for name in ("base", "sn1", "sn2", "sn3", "sn4"):
                qemu_check(lab.layer(name))
    finally:
        for lab in labs:
            destroy_lab(lab)


@pytest.mark.libvirt
def test_a_line_on_the_same_domain_waits_and_plans_on_the_chain_left(tmp_path: Path):
    """Line 2 names the domain line 1's job works on: it waits until line 1 has finished and
    then plans on the chain line 1 left (sn1 then holds sn2 and sn3)."""
    lab = make_lab(tmp_path)
    try:
        before = lab.guest_hash(tmp_path)
        script = tmp_path / "merge.vshx"
        first, second = "--base sn1 --top sn3", "--base base --top sn1"
        script.write_text(f"commit {lab.name} vda {first}\ncommit {lab.name} vda {second}\n")
        proc = run_batch(script)
        assert proc.returncode == 0, proc.stderr
        assert chain_files(lab.active) == ["sn4.qcow2", "base.qcow2"]
        assert lab.guest_hash(tmp_path) == before
        for name in ("base", "sn4"):
            qemu_check(lab.layer(name))
    finally:
        destroy_lab(lab)


@pytest.mark.libvirt
def test_ctrl_c_aborts_every_overlapping_job(tmp_path: Path):
    """Two lines' jobs copy side by side (held at 1 KiB/s); Ctrl-C aborts both and waits until
    each chain is as before: every layer still there, guest data unchanged, no journal left,
    the later line (`list`) never runs, each line's error names its line."""
    labs = _labs(tmp_path, 2)
    try:
        before = [lab.guest_hash(tmp_path) for lab in labs]
        script = tmp_path / "merge.vshx"
        slow = "--base sn1 --top sn3 --bandwidth 1024 --bytes"
        script.write_text("".join(f"commit {lab.name} vda {slow}\n" for lab in labs) + "list\n")
        proc = subprocess.Popen(
            [sys.executable, "-m", "vshx", "-c", URI, "-f", str(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            for _ in range(1200):
                if all(_job_running(lab) for lab in labs):
                    break
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.2)
            else:
                raise AssertionError("the two jobs never ran side by side")
        finally:
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 1, err
        assert [line.split(" error:")[0] for line in err.splitlines() if " error:" in line] == [
            f"{script}:1:",
            f"{script}:2:",
        ]
        # aborted (after copying part of sn3/sn2 into sn1, the message says so), chain as before
        assert "the block job was aborted" in err and "the chain is as before" in err
        assert "State" not in out  # `list` (its table header) never ran
        for lab, seen in zip(labs, before, strict=True):
            assert not _job_running(lab)
            assert chain_files(lab.active) == [f"sn{i}.qcow2" for i in (4, 3, 2, 1)] + [
                "base.qcow2"
            ]
            assert lab.guest_hash(tmp_path) == seen
            journal = subprocess.run(
                ["virsh", "-c", URI, "metadata", lab.name, "https://vshx.invalid/journal"],
                capture_output=True,
                text=True,
            )
            assert journal.returncode != 0, journal.stdout  # cleared: nothing to recover
            for name in ("base", "sn1", "sn2", "sn3", "sn4"):
                qemu_check(lab.layer(name))
    finally:
        for lab in labs:
            destroy_lab(lab)


def test_output_of_later_lines_waits_for_the_lines_before():
    """A later line's output (stdout and stderr in the order written) is kept until every
    line before it has finished; the oldest line still running writes straight through."""
    out, err = io.StringIO(), io.StringIO()
    output = Output(out, err)  # type: ignore[arg-type]
    first, second, third = (output.add() for _ in range(3))
    streams = {i: (LineStream(output, i, out), LineStream(output, i, err)) for i in range(3)}
    streams[third][1].write("3 err\n")
    streams[second][0].write("2 out\n")
    streams[first][0].write("1 out\n")
    assert (out.getvalue(), err.getvalue()) == ("1 out\n", "")
    output.finish(third)  # done before the lines above it: still kept
    assert err.getvalue() == ""
    streams[second][1].write("2 err\n")
    output.finish(first)  # the second line now writes through; the third still waits
    assert (out.getvalue(), err.getvalue()) == ("1 out\n2 out\n", "2 err\n")
    output.finish(second)
    assert err.getvalue() == "2 err\n3 err\n"
    assert not streams[second][0].isatty()


def _start(batch: overlap.Batch, line: overlap.Line, work: Callable[[], None]) -> None:
    line.thread = threading.Thread(target=overlap.run_line, args=(batch, line, work))
    with batch.cond:
        batch.lines.append(line)
    line.thread.start()


def test_a_claim_on_files_in_use_waits_for_the_line_using_them():
    """Line 2 claims a file line 1 works on while line 1 waits for its job: line 2 waits
    (and is told to read again) until line 1 has finished; line 1 gets the turn back."""
    batch = overlap.begin()
    try:
        seen: list[str] = []
        job_done = threading.Event()

        def first() -> None:
            overlap.claim_domain("a")
            overlap.claim_files({(1, 10)})
            with overlap.parked():
                job_done.wait()
            seen.append("line 1 ends")

        def second() -> None:
            overlap.claim_domain("b")  # another domain: no wait
            seen.append(f"line 2 read again: {overlap.claim_files({(1, 10), (1, 11)})}")

        one, two = overlap.Line(0, "f:1: "), overlap.Line(1, "f:2: ")
        _start(batch, one, first)
        with batch.cond:
            while not one.parked:
                batch.cond.wait()
        _start(batch, two, second)
        with batch.cond:
            while not two.waiting:
                batch.cond.wait()
        job_done.set()  # line 1's job ends while line 2 waits for its claim
        for line in (one, two):
            assert line.thread is not None
            line.thread.join()
        assert seen == ["line 1 ends", "line 2 read again: True"]
    finally:
        overlap.end()


def test_a_line_changes_nothing_after_an_earlier_line_failed():
    batch = overlap.begin()
    try:
        failed = overlap.Line(0, "f:1: ")
        failed.done = failed.failed = True
        batch.lines.append(failed)
        errors: list[VshxError] = []

        def later() -> None:
            try:
                overlap.before_change()
            except VshxError as exc:
                errors.append(exc)

        line = overlap.Line(1, "f:2: ")
        _start(batch, line, later)
        assert line.thread is not None
        line.thread.join()
        assert [e.message for e in errors] == [
            "not started: the line f:1 failed while this one was being checked"
        ]
        overlap.before_change()  # outside a batch line (this thread): nothing to check
    finally:
        overlap.end()


def test_a_line_begins_its_changes_only_after_the_lines_before_it_did():
    """Line 2 reaches its first change while line 1 (parked on a libvirt read) has not begun
    its own: line 2 waits, and begins only after line 1 did."""
    batch = overlap.begin()
    try:
        seen: list[str] = []
        answered = threading.Event()

        def first() -> None:
            with overlap.parked():  # its usage scan waits for libvirt
                answered.wait()
            overlap.before_change()
            seen.append("line 1 begins")

        def second() -> None:
            overlap.before_change()
            seen.append("line 2 begins")

        one, two = overlap.Line(0, "f:1: "), overlap.Line(1, "f:2: ")
        _start(batch, one, first)
        with batch.cond:
            while not one.parked:
                batch.cond.wait()
        _start(batch, two, second)
        with batch.cond:
            while not two.waiting:
                batch.cond.wait()
        answered.set()
        for line in (one, two):
            assert line.thread is not None
            line.thread.join()
        assert seen == ["line 1 begins", "line 2 begins"]
    finally:
        overlap.end()


def test_a_line_that_never_began_is_dropped_from_the_output():
    out, err = io.StringIO(), io.StringIO()
    output = Output(out, err)  # type: ignore[arg-type]
    first, second = output.add(ready=False), output.add(ready=False)
    LineStream(output, first, out).write("1 plans\n")
    LineStream(output, second, out).write("2 plans\n")
    assert out.getvalue() == ""  # nothing shown before a line begins its changes
    output.begin(first)
    assert out.getvalue() == "1 plans\n"
    output.finish(first)
    output.finish(second, drop=True)  # stopped before its first change: it never ran
    assert out.getvalue() == "1 plans\n"
