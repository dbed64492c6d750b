"""A pasted qemu-img line is read as qemu-img's getopt_long reads it, so --dry-run never runs
a repair however it is spelled (``--rep=all``, ``--r all``, ``-Urall``, after the file name).

The tables are qemu-img 7.2's; one test holds them against the installed binary: every prefix
of every long option and every short letter is accepted, refused or wants a value exactly as
vshx's reading says.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_vshx
from vshx.shell.getopt_long import LongOption, parse, resolve_long
from vshx.shell.readonly import QEMU_IMG_OPTIONS, plain_chain, qemu_img_files, qemu_img_reads
from vshx.storage.qcow2 import MAGIC

REPAIRS = [
    "check --repair=all x.qcow2",
    "check --repair all x.qcow2",
    "check --rep=all x.qcow2",
    "check --repa all x.qcow2",
    "check --r=all x.qcow2",
    "check --r leaks x.qcow2",
    "check -r all x.qcow2",
    "check -rall x.qcow2",
    "check -Urall x.qcow2",
    "check -qU -r leaks x.qcow2",
    "check x.qcow2 -r all",  # GNU getopt permutes: options after the file name count
    "check x.qcow2 --rep=leaks",
    "check -f qcow2 --output=json x.qcow2 --repai all",
]


@pytest.mark.parametrize("line", REPAIRS)
def test_every_spelling_of_repair_is_a_change(line: str):
    assert not qemu_img_reads(shlex.split(line))


READS = [
    "info -U x.qcow2",
    "info --backing-chain --output=json -U x.qcow2",
    "info --b --ou json --force x.qcow2",  # unambiguous prefixes of read-only options
    "info --forc --form qcow2 x.qcow2",
    "check x.qcow2",
    "check -U -q -T none --output json x.qcow2",
    "check --output -r x.qcow2",  # -r is --output's value here, not an option
    "check -- -r",  # after --, -r is a file name
    "check -- x.qcow2 --repair=all",
    "compare -p -s -F qcow2 a.qcow2 b.qcow2",
    "map --start-offset=0 --max 1M --output=json x.qcow2",
    "measure -O qcow2 --size 1G",
    "info -f raw /images/a:b.raw",  # a ':' after a '/' is part of the name
    "compare -f qcow2 -F raw a.qcow2 ./b:c.raw",
]


@pytest.mark.parametrize("line", READS)
def test_reading_options_in_any_spelling_read(line: str):
    assert qemu_img_reads(shlex.split(line))


CANNOT_TELL = [
    "check --o json x.qcow2",  # ambiguous: --output or --object; qemu-img refuses it
    "info --f qcow2 x.qcow2",  # ambiguous: --format or --force-share
    "check --xyz x.qcow2",
    "check -Z x.qcow2",
    "check x.qcow2 -f",  # a missing value
    "check --image-opts=1 x.qcow2",  # a value to an option that takes none
    "info --object secret,id=s0,data=x x.qcow2",  # creates an object vshx has not reviewed
    "info --ob=secret,id=s0,data=x x.qcow2",
    "--trace file=/tmp/t info x.qcow2",  # options before the subcommand
    "-T file=/tmp/t check x.qcow2",
    "commit x.qcow2",
    "snapshot -l x.qcow2",
    "inf x.qcow2",  # qemu-img matches subcommand names exactly; vshx runs only listed ones
    # a file name or --image-opts may open the image for writing (read-only=off), and an
    # image opened so is written: qemu-img info repairs a dirty lazy-refcounts qcow2
    """info 'json:{"driver":"qcow2","read-only":false,"file":{"filename":"x.qcow2"}}'""",
    "info --image-opts driver=qcow2,read-only=off,file.filename=x.qcow2",
    "check --im driver=qcow2,file.filename=x.qcow2",
    "info fat:rw:/tmp",
    "compare a.qcow2 nbd:localhost:10809",
    "info -f vvfat x",  # a driver that is no plain image format
    "map --format=blkdebug x.qcow2",
]


@pytest.mark.parametrize("line", CANNOT_TELL)
def test_what_vshx_cannot_classify_is_treated_as_changing(line: str):
    assert not qemu_img_reads(shlex.split(line))


def test_getopt_long_prefers_an_exact_name_and_joins_agreeing_prefixes():
    table = (
        LongOption("force", False, "F"),
        LongOption("force-share", False, "U"),
        LongOption("color", True, "c"),
        LongOption("colour", True, "c"),
    )
    assert resolve_long("force", table) == table[0]  # exact wins over a longer one
    assert resolve_long("force-", table) == table[1]
    assert resolve_long("for", table) is None  # ambiguous
    assert resolve_long("col", table) == table[2]  # two names of one option: not ambiguous
    assert resolve_long("x", table) is None


def test_getopt_long_reads_clusters_values_and_the_end_of_options():
    table = (LongOption("repair", True, "r"),)
    parsed = parse(["-Urall", "a", "--rep", "b", "c", "--", "-r"], ":r:U", table)
    assert parsed is not None
    assert parsed.options == (("U", None), ("r", "all"), ("r", "b"))
    assert parsed.operands == ("a", "c", "-r")
    assert parse(["a", "-"], ":r:", table) == parse(["a", "-"], "r:", table)
    assert parse(["x", "-r"], ":r:", table) is None
    plain = parse(["x", "-r", "all"], "+r:", table)  # '+': stops at the first operand
    assert plain is not None and plain.options == ()


def _header(backing: str = "", version: int = 3) -> bytes:
    """A qcow2 header (64 KiB clusters) naming ``backing`` right after it."""
    name = backing.encode()
    head = MAGIC + struct.pack(">IQII", version, 112 if name else 0, len(name), 16)
    head += bytes(100 - len(head)) + struct.pack(">I", 104) + bytes(8)  # no extensions
    return head + name


def test_a_chain_is_plain_when_every_header_names_its_backing_plainly():
    disk = {
        "/i/top.qcow2": _header("mid.qcow2"),
        "/i/mid.qcow2": _header("/i/base.raw"),
        "/i/base.raw": bytes(4096),
    }
    assert plain_chain("/i/top.qcow2", disk.get)
    assert plain_chain("/i/gone.qcow2", disk.get)  # missing: qemu-img fails, nothing opened
    json_name = 'json:{"driver":"qcow2","read-only":false,"file":{"filename":"/i/base.qcow2"}}'
    for below in (json_name, "nbd:localhost:10809", "fat:rw:/tmp"):
        disk["/i/mid.qcow2"] = _header(below)
        assert not plain_chain("/i/top.qcow2", disk.get), below
    disk["/i/mid.qcow2"] = _header("/i/base.qed")
    disk["/i/base.qed"] = b"QED\0" + bytes(60)
    assert not plain_chain("/i/top.qcow2", disk.get)  # qed names files vshx does not read
    disk["/i/base.qed"] = b"# Disk DescriptorFile\nversion=1\ncreateType=monolithicFlat\n"
    assert not plain_chain("/i/top.qcow2", disk.get)  # a vmdk descriptor names extents
    disk["/i/mid.qcow2"] = _header("/i/base.raw", version=1)
    assert not plain_chain("/i/top.qcow2", disk.get)  # qcow version 1: not read here
    loop = {"/i/a.qcow2": _header("b.qcow2"), "/i/b.qcow2": _header("a.qcow2")}
    assert not plain_chain("/i/a.qcow2", loop.get)  # deeper than vshx follows


def test_the_files_a_read_opens_are_its_operands():
    assert qemu_img_files(["compare", "-f", "qcow2", "a", "-F", "raw", "b"]) == ["a", "b"]
    assert qemu_img_files(["measure", "-O", "qcow2", "--size", "1G"]) == []


def _qemu_img_7_2() -> bool:
    if shutil.which("qemu-img") is None:
        return False
    out = subprocess.run(["qemu-img", "--version"], capture_output=True, text=True).stdout
    return out.startswith("qemu-img version 7.2.")


def _qemu_img_says(sub: str, word: str) -> str:
    """How qemu-img SUB takes one option word alone: refused, wants a value, or accepted."""
    proc = subprocess.run(
        ["qemu-img", sub, word], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    said = proc.stdout + proc.stderr
    if re.search(r"unrecognized option|invalid option|is ambiguous", said):
        return "refused"
    if re.search(r"missing argument|requires an argument", said):
        return "value"
    return "accepted"


def _vshx_says(sub: str, word: str) -> str:
    optstring, table = QEMU_IMG_OPTIONS[sub]
    if parse([word], optstring, table) is not None:
        return "accepted"
    if parse([word, "v"], optstring, table) is not None:
        return "value"
    return "refused"


@pytest.mark.skipif(not _qemu_img_7_2(), reason="needs qemu-img 7.2 (the tables are its)")
def test_the_option_tables_are_those_of_the_installed_qemu_img_7_2():
    for sub, (optstring, table) in QEMU_IMG_OPTIONS.items():
        words = {f"--{o.name[:n]}" for o in table for n in range(1, len(o.name) + 1)}
        words |= {f"-{c}" for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123"}
        words |= {"--xyz", "--backing", "--repair", "--start"}  # names of other subcommands
        for word in sorted(words):
            assert _qemu_img_says(sub, word) == _vshx_says(sub, word), (sub, word, optstring)


@pytest.mark.libvirt  # a pasted repair is a write: vshx asks the daemon who uses the image
@pytest.mark.skipif(shutil.which("qemu-io") is None, reason="needs qemu-io to damage an image")
def test_dry_run_of_an_abbreviated_repair_leaves_a_damaged_image_as_it_was(tmp_path: Path):
    image = tmp_path / "vshx-fixpt-damaged.qcow2"
    before = _damaged(image)  # a write, then abort: lazy refcounts never written
    assert subprocess.run(["qemu-img", "check", str(image)], capture_output=True).returncode == 2
    for words in (["--rep=all"], ["--r", "leaks"], ["-Urall"], ["--repa", "all"]):
        proc = run_vshx("--dry-run", "qemu-img", "check", *words, str(image))
        assert "Traceback" not in proc.stderr
        assert proc.returncode == 0, proc.stderr
        assert shlex.split(proc.stdout.splitlines()[-1]) == [
            "qemu-img",
            "check",
            *words,
            str(image),
        ]
        assert hashlib.sha256(image.read_bytes()).hexdigest() == before, words
    opened_for_writing = json.dumps(
        {"driver": "qcow2", "read-only": False, "file": {"driver": "file", "filename": str(image)}}
    )
    proc = run_vshx("--dry-run", "qemu-img", "info", f"json:{opened_for_writing}")
    assert proc.returncode == 0 and "Rebuilding refcount" not in proc.stderr, proc.stderr
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before
    read = run_vshx("--dry-run", "qemu-img", "check", "--ou", "json", str(image))
    assert '"corruptions": 2' in read.stderr or '"corruptions":2' in read.stderr, read.stderr
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before
    assert subprocess.run(["qemu-img", "check", str(image)], capture_output=True).returncode == 2


def _damaged(image: Path) -> str:
    """A qcow2 image left dirty with lazy refcounts (a write, then abort): opened for
    writing, QEMU repairs it.  Returns the sha256 of its bytes."""
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=1.1,lazy_refcounts=on"]
        + [str(image), "1M"],
        check=True,
    )
    subprocess.run(
        ["qemu-io", "-c", "write -P 0x5a 0 512", "-c", "abort", str(image)],
        capture_output=True,
        check=False,
    )
    return hashlib.sha256(image.read_bytes()).hexdigest()


@pytest.mark.skipif(shutil.which("qemu-io") is None, reason="needs qemu-io to damage an image")
def test_dry_run_reads_no_image_whose_backing_name_opens_a_file_for_writing(tmp_path: Path):
    """qemu-img 7.2 opens a backing file named json:{..."read-only":false...} for writing
    even under check -U, and repairs it if dirty: such a chain is printed, never run."""
    base = tmp_path / "vshx-fixpt-base.qcow2"
    before = _damaged(base)
    name = json.dumps(
        {
            "driver": "qcow2",
            "read-only": False,
            "force-share": False,
            "file": {"driver": "file", "filename": str(base), "read-only": False},
        }
    )
    top = tmp_path / "vshx-fixpt-top.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "qcow2", "-b", f"json:{name}"]
        + [str(top), "1M"],
        check=True,
    )
    for words in (["check", "-U"], ["info", "--backing-chain"], ["map"], ["check"]):
        proc = run_vshx("--dry-run", "qemu-img", *words, str(top))
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        assert shlex.split(proc.stdout.splitlines()[-1]) == ["qemu-img", *words, str(top)]
        assert "Repairing" not in proc.stderr and "No errors" not in proc.stderr, words
        assert hashlib.sha256(base.read_bytes()).hexdigest() == before, words
    # a plain chain is still read under --dry-run (its output on stderr)
    plain = tmp_path / "vshx-fixpt-plain.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(plain)],
        check=True,
    )
    read = run_vshx("--dry-run", "qemu-img", "info", "-U", "--backing-chain", str(plain))
    assert read.returncode == 0 and f"image: {base}" in read.stderr, read.stderr
    assert hashlib.sha256(base.read_bytes()).hexdigest() == before
