"""Every printed --dry-run line is safe for sh, whatever a snapshot name or file name holds.

libvirt accepts a newline (and quotes, ``$(...)``, backquotes) in a snapshot name; the script
`snapshot-cleanup --dry-run` prints must run none of it.  One escaper makes every ``#`` line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import URI, destroy_lab, make_lab, run_vshx, snapshot_names, virsh

from vshx.plans.plan import Plan, Step, comment, shell_line, with_heredoc
from vshx.spec.render import comments, printable, quoted, table

HOSTILE = [
    "evil\ntouch pwned1",
    "a\rtouch pwned2",
    "x\u2028touch pwned3",
    "y\u0085touch pwned4",
    "$(touch pwned5)",
    "`touch pwned6`",
    "it's\n'; touch pwned7; '",
    "\x1b[2J\x1b]0;title\x07touch pwned8",
    "\\\ntouch pwned9",
    "\x00\x0b\x0c\ttouch pwned10",
]


def run_sh(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-e"], input=script, cwd=cwd, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("text", HOSTILE)
def test_comment_is_one_hash_line_without_control_characters(text: str):
    line = comment(text)
    assert line.startswith("# ")
    assert "\n" not in line and all(ch.isprintable() for ch in line)
    assert printable(text) in line


def test_hostile_text_in_every_printed_place_runs_nothing(tmp_path: Path):
    plan = Plan(" ".join(HOSTILE), method=HOSTILE[0])
    plan.notes += HOSTILE
    for text in HOSTILE:
        plan.add(Step(text, ["true", text], underneath=[text]))
    script = plan.script(explain=True)
    script += comments(table([[t, t] for t in HOSTILE], ["Snapshot", "Why"]))
    script += comments("\n".join(HOSTILE))
    script += with_heredoc(shell_line(["cat"]), "VSHX_EOF\ntouch pwned11\nVSHX_EOF\r\n") + "\n"
    proc = run_sh(script, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert list(tmp_path.iterdir()) == []
    assert "touch pwned11" in proc.stdout  # the here-document body stayed a body


def test_table_keeps_one_row_per_line():
    text = table([["a\nb", "c"], ["d", "e\r\nf"]], ["One", "Two"])
    assert len(text.splitlines()) == 4


@pytest.mark.libvirt
def test_snapshot_name_with_a_newline_runs_nothing_from_dry_run(tmp_path: Path):
    """A stale snapshot whose name holds a newline and shell syntax (libvirt forbids only
    '/'): the printed script deletes exactly that snapshot's metadata and runs nothing else."""
    lab = make_lab(tmp_path, running=False, layers=2)
    try:
        xml = virsh("snapshot-dumpxml", lab.name, "sn1").stdout
        name = "evil\ntouch pwned1 $(touch pwned2) `touch pwned3` ' x\n\u2028touch pwned4"
        xml = xml.replace("<name>sn1</name>", f"<name>{name}</name>", 1)
        xml = re.sub(r"<source file='[^']*sn1\.qcow2'/>", "<source file='/nonexistent'/>", xml)
        path = tmp_path / "snapshot.xml"
        path.write_text(xml)
        virsh("snapshot-create", lab.name, str(path), "--redefine")
        assert name in virsh("snapshot-list", lab.name, "--name").stdout
        proc = run_vshx("snapshot-cleanup", lab.name, "--dry-run")
        assert proc.returncode == 0, proc.stderr
        assert "| metadata removed |" in proc.stdout
        assert f"virsh -c {URI} snapshot-delete {lab.name} 'evil" in proc.stdout
        work = tmp_path / "cwd"
        work.mkdir()
        ran = run_sh(proc.stdout, work)
        assert ran.returncode == 0, ran.stderr
        assert list(work.iterdir()) == []  # no pwned file
        # the script did its one job: that snapshot's metadata is gone, the others stay
        assert name not in virsh("snapshot-list", lab.name, "--name").stdout
        assert snapshot_names(lab.name) == ["sn1", "sn2"]
    finally:
        destroy_lab(lab)


@pytest.mark.libvirt
def test_read_commands_under_dry_run_print_only_comment_lines(tmp_path: Path):
    """A command's answer (help, jobs, a completion script) under --dry-run is `#` lines."""
    lab = make_lab(tmp_path, running=False, layers=1)
    try:  # jobs of one domain: host-wide, another's domain stopping mid-scan fails it today
        for argv in (["help"], ["help", "commit"], ["jobs", lab.name], ["completion", "bash"]):
            proc = run_vshx("--dry-run", *argv)
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout, argv
            assert all(line.startswith("#") for line in proc.stdout.splitlines()), argv
            assert run_sh(proc.stdout, tmp_path).returncode == 0
    finally:
        destroy_lab(lab)


def test_a_byte_that_is_not_utf8_is_shown_as_the_byte() -> None:
    """Python holds a file name's non-UTF-8 byte as a surrogate escape; an outside tester saw
    ``base\\udcff.qcow2`` in tables and notes where the name is ``base\\xff.qcow2``."""
    name = b"/x/base\xff\x01.qcow2".decode("utf-8", "surrogateescape")
    assert printable(name) == "/x/base\\xff\\x01.qcow2"
    assert comments(name) == "# /x/base\\xff\\x01.qcow2\n"


def test_a_name_spelling_a_surrogate_escape_is_shown_as_it_is() -> None:
    """A name whose own characters are a backslash and ``udcff`` is no byte: neither the
    helper that quotes names in messages nor printable() rewrites it to ``\\xff``; only a
    real non-UTF-8 byte (held as a surrogate escape) is shown as ``\\xff``."""
    spelled = "/x/base\\udcff.qcow2"  # a real backslash, then 'udcff'
    byte = b"/x/base\xff.qcow2".decode("utf-8", "surrogateescape")
    assert printable(spelled) == spelled
    assert quoted(spelled) == repr(spelled) == "'/x/base\\\\udcff.qcow2'"
    assert printable(byte) == "/x/base\\xff.qcow2"
    assert quoted(byte) == "'/x/base\\xff.qcow2'"
    # a message quoting both is printed as it stands: printable() no longer rewrites repr text
    message = f"{quoted(spelled)} and {quoted(byte)}"
    assert printable(message) == message == "'/x/base\\\\udcff.qcow2' and '/x/base\\xff.qcow2'"


@pytest.mark.parametrize(
    "name", [*HOSTILE, "plain.qcow2", "it's", 'say "hi"', "both '\"", "a\\b", "\ud800", "é \xa0"]
)
def test_quoted_is_repr_for_every_name_without_a_byte(name: str) -> None:
    """Messages keep their text: quoted() differs from repr() only where a byte is not UTF-8,
    and escapes control characters as printable() does (one line, nothing for a terminal)."""
    assert quoted(name) == repr(name)
    assert quoted(name + "\udcfe") == repr(name)[:-1] + "\\xfe" + repr(name)[-1]
    assert quoted(name).isprintable()


def test_an_error_naming_a_file_shows_its_byte_and_its_backslash_as_they_are(
    tmp_path: Path,
) -> None:
    """End to end: the error about a missing image names it once, byte as ``\\xff``, a real
    backslash doubled (as repr quotes it), nothing rewritten."""
    missing = os.fsdecode(bytes(tmp_path) + b"/a\\udcff-\xff.qcow2")
    done = subprocess.run(
        [sys.executable, "-m", "vshx", "chain", missing],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    shown = os.fsdecode(bytes(tmp_path)) + "/a\\\\udcff-\\xff.qcow2"
    assert done.stderr.startswith(f"error: image '{shown}' does not exist\n"), done.stderr
