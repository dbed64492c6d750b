"""`vshx --record FILE`: a transcript of what went through vshx that `vshx -f FILE` replays."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import URI, run_vshx
from test_lessons import (  # the entry points of this tree, when not installed
    Student,
    metadata_path,
)

from vshx.shell.record import comment_lines, redrawn


def test_a_transcript_records_commands_output_errors_and_replays(tmp_path: Path) -> None:
    record = tmp_path / "class.vshx"
    one = run_vshx("--record", str(record), "help", "commit")
    assert one.returncode == 0, one.stderr
    typed = "- nosuchcmd\nqemu-img --version <<'END'\nignored\nEND\nhelp pull\n"
    batch = run_vshx("--record", str(record), stdin=typed)
    assert batch.returncode == 0, batch.stderr
    text = record.read_text()
    lines = text.splitlines()
    assert lines[0].startswith("# vshx transcript of ") and "qemu:///" in lines[0]
    assert lines.count("help commit") == 1 and "- nosuchcmd" in lines
    assert "#! <stdin>:1: error: unknown command 'nosuchcmd'" in lines
    assert any(x.startswith("#  qemu-img version") for x in lines)
    assert "qemu-img --version <<'VSHX_EOF'" in lines and "ignored" in lines
    assert (
        "#      commit - merge layers down into a lower layer" in text
    )  # output in order, as # lines
    assert lines.index("help commit") < lines.index("- nosuchcmd") < lines.index("help pull")
    assert text.count("# exit ") == 4 and "# exit 2 (" in text
    replay = run_vshx("-f", str(record))
    assert replay.returncode == 0, replay.stderr
    assert "commit - merge layers down" in replay.stdout and "qemu-img version" in replay.stdout
    assert "unknown command 'nosuchcmd'" in replay.stderr


def test_transcript_comments_stay_comments() -> None:
    assert comment_lines("#  ", "a\nb\n") == "#  a\n#  b\n"
    assert comment_lines("#! ", "bad\rname\n").count("\n") == 1


def test_a_progress_line_redrawn_in_place_is_recorded_as_it_ended() -> None:
    """nu12 #12: a terminal's progress line (carriage return, erase to the end) went into the
    transcript with its control bytes; only its last state is what the student saw."""
    drawn = "\r\x1b[Kblock commit: 40%\r\x1b[Kblock commit: done (0.12 s)\nnext\n"
    assert redrawn(drawn) == "block commit: done (0.12 s)\nnext\n"
    assert redrawn("plain\n") == "plain\n"


def test_an_unwritable_transcript_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    proc = run_vshx("--record", str(tmp_path / "no" / "such" / "dir"), "help")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot write the transcript")


def test_record_and_record_stop_in_the_shell(tmp_path: Path) -> None:
    record = tmp_path / "t.vshx"
    typed = f"help pull\nrecord {record}\nqemu-img --version\nrecord stop\nhelp commit\n"
    path = os.pathsep.join([*metadata_path(tmp_path), os.environ.get("PYTHONPATH", "")])
    proc = run_vshx(stdin=typed, env=dict(os.environ, PYTHONPATH=path))
    assert proc.returncode == 0, proc.stderr
    text = record.read_text()
    assert "\nqemu-img --version\n" in text and "#  qemu-img version" in text
    assert "help pull" not in text and "help commit" not in text and "\n#\n" not in text
    assert text.rstrip().splitlines()[-1].startswith("# transcript ends")


@pytest.mark.libvirt
def test_a_lesson_typed_into_vshx_records_virsh_output_and_errors_and_replays(
    tmp_path: Path,
) -> None:
    """The student types real virsh and qemu-img lines into `vshx --record`: the programs'
    own stdout and stderr land in the transcript where they happened; after `lesson reset`,
    `vshx -f TRANSCRIPT` repeats the session and the lesson is done again."""
    student = Student(tmp_path, "commit-middle")
    record = tmp_path / "class.vshx"
    lab, sn1, sn3 = student.lab, student.dir / "sn1.qcow2", student.dir / "sn3.qcow2"
    typed = [
        "- lesson check",
        f"- virsh domstate {lab}-nosuch",  # virsh's own error, on its stderr
        f"virsh domstate {lab}",  # virsh's own output, on its stdout
        f"- qemu-img info {student.dir}/nosuch.qcow2",
        f"virsh blockcommit {lab} vda --base {sn1} --top {sn3} --wait --verbose",
        f"virsh snapshot-delete {lab} sn2 --metadata",
        f"virsh snapshot-delete {lab} sn3 --metadata",
        f"qemu-img info -U {student.dir}/sn4.qcow2",
        "lesson check",
    ]
    try:
        student.start()
        proc = student.vshx("--record", str(record), stdin="\n".join(typed) + "\n")
        assert proc.returncode == 0, proc.stderr
        lines = record.read_text().splitlines()
        assert lines[1].startswith(f"# replay: vshx -c {URI} -f THIS_FILE")
        at = [lines.index(line) for line in typed]
        assert at == sorted(at), "the commands in the order typed"
        assert lines[at[1] + 1] == f"#! error: failed to get domain '{lab}-nosuch'"
        assert lines[at[2] + 1] == "#  running"
        assert lines[at[3] + 1].startswith("#! qemu-img: Could not open ")
        backing = [x for x in lines[at[7] :] if x.startswith("#  backing file: ")]
        assert backing[0] == f"#  backing file: {sn1}", "the commit's end state"
        assert lines[at[0] + 1].startswith("#! not done: lesson commit-middle")
        assert lines[at[8] + 1].startswith("#  done: lesson commit-middle")
        exits = [x for x in lines if x.startswith("# exit ")]
        assert [x.split()[2] for x in exits] == ["1", "1", "0", "1", "0", "0", "0", "0", "0"]
        student.reset()
        student.fails("sn2.qcow2 is still in the chain")
        replay = student.vshx("-f", str(record))
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert f"done: lesson commit-middle on {lab}" in replay.stdout
        assert f"failed to get domain '{lab}-nosuch'" in replay.stderr
        student.passes()
    finally:
        student.destroy()


def test_dry_run_record_writes_nothing_and_no_transcript_goes_into_a_users_file(
    tmp_path: Path,
) -> None:
    """An outside tester: `vshx --dry-run record FILE` appended to FILE (a --dry-run changes
    nothing), and a transcript was appended to any file, one of the user's too."""
    precious = tmp_path / "precious.txt"
    precious.write_text("precious data\n")
    dry = run_vshx("--dry-run", "record", str(precious))
    assert dry.returncode == 0, dry.stderr
    assert "no transcript is started" in dry.stdout
    for argv in (["record", str(precious)], ["--record", str(precious), "help"]):
        refused = run_vshx(*argv)
        assert refused.returncode == 1, refused.stderr
        assert "is not a vshx transcript" in refused.stderr and "hint: " in refused.stderr
    assert precious.read_text() == "precious data\n"
    planned = tmp_path / "planned.vshx"  # atk13 F4: its replay would run for real
    refused = run_vshx("--dry-run", "--record", str(planned), "help")
    assert refused.returncode == 1 and "nothing to record" in refused.stderr, refused.stderr
    assert "hint: " in refused.stderr and not planned.exists()
    transcript = tmp_path / "t.txt"
    for _ in range(2):  # a transcript of vshx's own is appended to
        assert run_vshx("--record", str(transcript), "help").returncode == 0
    assert transcript.read_text().count("# vshx transcript of ") == 2
