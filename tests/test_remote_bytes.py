"""A file name with a byte that is not UTF-8: one name for one file, locally and over ssh.

qemu-img's ``--output=json`` prints such a byte as U+FFFD (QEMU 7.2), the very name of another
file ``base\\uFFFD.qcow2`` (bytes ``ef bf bd``) that may be there too (the decoy here).  vshx
names the real file: the name read back from ``--json`` and fsencoded is its bytes, on this
machine and on a host reached over ssh (the run's loopback sshd), and a plan names it too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sshd import Sshd, hidden

pytestmark = [pytest.mark.libvirt]

REAL = b"base\xff.qcow2"
DECOY = b"base\xef\xbf\xbd.qcow2"  # "base\ufffd.qcow2": what qemu-img prints for REAL


def odd_chain(directory: Path) -> tuple[bytes, bytes, bytes]:
    """top.qcow2 on base\\xff.qcow2 (16M), and the decoy base\\uFFFD.qcow2 (32M) beside them."""
    where = os.fsencode(directory)
    real, decoy, top = where + b"/" + REAL, where + b"/" + DECOY, where + b"/top.qcow2"
    make = [b"qemu-img", b"create", b"-q", b"-f", b"qcow2"]
    subprocess.run([*make, real, b"16M"], check=True)
    subprocess.run([*make, decoy, b"32M"], check=True)
    subprocess.run([*make, b"-F", b"qcow2", b"-b", real, top], check=True)
    with open(decoy, "r+b") as handle:  # the decoy's size on disk differs from the real one's
        handle.seek(1 << 20)
        handle.write(b"x" * 65536)
    return real, decoy, top


def named_layers(stdout: bytes) -> list[dict[str, object]]:
    """The layers of ``chain --json``: the output is UTF-8 JSON (ASCII, escapes for the rest)."""
    text = stdout.decode("utf-8")  # strict: a raw 0xff byte is no JSON text
    layers = json.loads(text)["chains"][0]["layers"]
    assert isinstance(layers, list)
    return layers


def check_names_real(layers: list[dict[str, object]], real: bytes, top: bytes) -> None:
    paths = [os.fsencode(str(layer["path"])) for layer in layers]
    assert paths == [top, real], paths
    assert layers[1]["allocated"] == os.stat(real).st_blocks * 512, layers[1]


def test_local_chain_json_is_utf8_and_names_the_byte_losslessly(tmp_path: Path) -> None:
    real, _, top = odd_chain(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "vshx", "chain", os.fsdecode(top), "--json"],
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert b"\xff" not in done.stdout and b"\\udcff" in done.stdout, done.stdout
    check_names_real(named_layers(done.stdout), real, top)


def remote(sshd: Sshd, hide: Path, *words: str) -> subprocess.CompletedProcess[bytes]:
    """vshx on the sshd URI where ``hide`` is empty: only what ssh reads there can work."""
    argv = hidden([hide], [sys.executable, "-m", "vshx", "-c", sshd.uri(), *words])
    return subprocess.run(argv, capture_output=True, env=sshd.env(), timeout=600, check=False)


@pytest.mark.root  # hidden() mounts
def test_remote_chain_and_plan_name_the_real_file_not_the_decoy(sshd: Sshd, tmp_path: Path) -> None:
    real, decoy, top = odd_chain(tmp_path)
    done = remote(sshd, tmp_path, "chain", os.fsdecode(top), "--json")
    assert done.returncode == 0, done.stderr
    check_names_real(named_layers(done.stdout), real, top)

    plan = remote(sshd, tmp_path, "commit", os.fsdecode(top), "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert real in plan.stdout, plan.stdout
    assert decoy not in plan.stdout, plan.stdout
    assert b"\xef\xbf\xbd" not in plan.stdout + plan.stderr


@pytest.mark.root  # hidden() mounts
def test_a_name_only_qemu_img_prints_is_refused_over_ssh_never_guessed(
    sshd: Sshd, tmp_path: Path
) -> None:
    """A name no header gives (the base's external data file, base\\xff.raw): qemu-img prints
    U+FFFD for the byte, and vshx cannot know which file that is, so it refuses."""
    where = os.fsencode(tmp_path)
    base, top = where + b"/base.qcow2", where + b"/top.qcow2"
    data = where + b"/data\xff.raw"
    make = [b"qemu-img", b"create", b"-q", b"-f", b"qcow2"]
    subprocess.run([*make, b"-o", b"data_file=" + data, base, b"16M"], check=True)
    subprocess.run([*make, b"-F", b"qcow2", b"-b", base, top], check=True)
    subprocess.run([b"truncate", b"-s", b"16M", where + b"/data\xef\xbf\xbd.raw"], check=True)
    before = sorted(os.listdir(where))
    for words in (["chain", os.fsdecode(top), "--json"], ["commit", os.fsdecode(top)]):
        done = remote(sshd, tmp_path, *words)
        said = done.stderr.decode("utf-8", "replace")
        assert done.returncode == 1, (words, done.stdout, said)
        assert said.startswith("error: cannot tell which file qemu-img means"), said
        assert "hint:" in said and "Traceback" not in said, said
    assert sorted(os.listdir(where)) == before
