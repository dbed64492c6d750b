"""`vshx --record FILE`: a transcript of what went through vshx that `vshx -f FILE` replays."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import run_vshx
from test_lessons import metadata_path  # the entry points of this tree, when not installed

from vshx.shell.record import comment_lines


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
