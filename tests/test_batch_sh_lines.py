"""A batch script reads as sh reads it (atk5 F17): a backslash before the line break continues
the line (unquoted or in double quotes; in single quotes and comments it is itself);
``-f FILE COMMAND`` is a usage error; an unreadable script says error and hint.

Each script runs qemu-img on real images, and sh reads the same text for comparison."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import URI


def vshx(*words: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "vshx", "-c", URI, *words]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)


def images(tmp_path: Path) -> Path:
    for name in ("image.qcow2", "ima\\", "ge.qcow2"):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / name), "1M"],
                       check=True)  # fmt: skip
    return tmp_path


def argv_of_sh(text: str, tmp_path: Path) -> list[list[str]]:
    """The commands sh reads from TEXT (each `qemu-img` one is shown, not run)."""
    show = tmp_path / "bin"
    show.mkdir(exist_ok=True)
    (show / "qemu-img").write_text("#!/bin/sh\nprintf '<%s>' \"$@\"; echo\n")
    (show / "qemu-img").chmod(0o755)
    done = subprocess.run(["sh", "-c", f"PATH={show}:$PATH\n{text}"], capture_output=True,
                          text=True, check=True)  # fmt: skip
    return [line[1:-1].split("><") for line in done.stdout.splitlines()]


@pytest.mark.parametrize(
    "text",
    [
        "qemu-img info --output=json {d}/ima\\\nge.qcow2\n",  # unquoted: one word, joined
        'qemu-img info --output=json "{d}/ima\\\nge.qcow2"\n',  # double quotes: joined too
        "qemu-img info \\\n  --output=json {d}/image.qcow2\n",  # indented continuation
        "qemu-img info --output=json {d}/image.qcow2 # a comment \\\n",  # in a comment: itself
    ],
)
def test_a_backslash_line_break_continues_the_line_as_in_sh(tmp_path: Path, text: str) -> None:
    d = images(tmp_path)
    script = text.format(d=d)
    (wanted,) = argv_of_sh(script, tmp_path)
    done = vshx("-x", "-f", "-", stdin=script)
    assert done.returncode == 0, done.stderr
    echoed = [line for line in done.stderr.splitlines() if line.startswith("+ ")]
    assert len(echoed) == 1, done.stderr  # one command, not two
    assert f'"filename": "{wanted[-1]}"' in done.stdout, (wanted, done.stdout)
    assert wanted[-1] == f"{d}/image.qcow2"


def test_a_backslash_in_single_quotes_is_itself(tmp_path: Path) -> None:
    d = images(tmp_path)
    script = f"qemu-img info --output=json '{d}/ima\\'\n"
    (wanted,) = argv_of_sh(script, tmp_path)
    assert wanted[-1] == f"{d}/ima\\"
    done = vshx("-f", "-", stdin=script)
    assert done.returncode == 0, done.stderr
    assert '"filename": "' + f"{d}/ima\\\\" + '"' in done.stdout, done.stdout  # JSON escapes it


def test_a_command_after_a_script_is_a_usage_error(tmp_path: Path) -> None:
    script = tmp_path / "s.vshx"
    script.write_text(f"qemu-img info {tmp_path}/nothing.qcow2\n")
    done = vshx("-f", str(script), "chain", "somedomain")
    assert done.returncode == 2, done
    assert done.stdout == "" and done.stderr.startswith("error: -f "), done.stderr
    assert "hint: " in done.stderr and "nothing.qcow2" not in done.stderr  # the script never ran


def test_an_unreadable_script_says_error_and_hint(tmp_path: Path) -> None:
    done = vshx("-f", str(tmp_path / "missing.vshx"))
    assert done.returncode == 1
    said = done.stderr.splitlines()
    assert said[0].startswith("error: cannot read script ") and said[1].startswith("hint: "), said
