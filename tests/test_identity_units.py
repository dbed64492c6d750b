"""Pure logic of file identity, json: backing names, data files and the chain lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vshx.errors import VshxError
from vshx.plans import lock
from vshx.storage.identity import birth_ns, identity
from vshx.storage.qcow2 import chain_files, header_names, image_files, json_backing


def test_identity_of_links_and_missing_files(tmp_path: Path):
    real = tmp_path / "a.img"
    real.write_bytes(b"x")
    os.link(real, tmp_path / "hard")
    os.symlink(real, tmp_path / "soft")
    key = identity(str(real))
    assert identity(str(tmp_path / "hard")) == key == identity(str(tmp_path / "soft"))
    (tmp_path / "sub").mkdir()
    assert identity(str(tmp_path / "sub" / ".." / "a.img")) == key
    assert identity(str(tmp_path / "missing")) == str(tmp_path / "missing")


def test_birth_time_is_the_one_stat_reports_and_needs_no_ctypes_package(tmp_path: Path):
    """statx is called through storage/libc.py (built from _ctypes alone): the birth time
    matches coreutils' ``stat -c %W`` (whole seconds; 0 where the file system keeps none),
    a missing file or another host's has none, and the ctypes package stays unloaded."""
    made = tmp_path / "made"
    made.write_bytes(b"x")
    told = subprocess.run(["stat", "-c", "%W", str(made)], capture_output=True, text=True)
    born = birth_ns(str(made), True)
    if told.stdout.strip() in ("", "0", "-"):
        assert born is None
    else:
        assert born is not None and born // 10**9 == int(told.stdout)
    assert birth_ns(str(tmp_path / "missing"), True) is None
    assert birth_ns(str(made), False) is None
    code = (
        "import sys; from vshx.storage.identity import birth_ns; "
        f"birth_ns({str(made)!r}, True); print('ctypes' in sys.modules)"
    )
    root = Path(__file__).resolve().parent.parent
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert loaded.stdout.split() == ["False"], loaded.stderr


def test_json_backing_names_nested_dotted_and_refused():
    nested = {"driver": "qcow2", "file": {"driver": "file", "filename": "/i/base.qcow2"}}
    assert json_backing("json:" + json.dumps(nested), "/o/x") == (
        ["/i/base.qcow2"],
        "/i/base.qcow2",
    )
    dotted = {"driver": "qcow2", "file.driver": "file", "file.filename": "/i/b"}
    assert json_backing("json:" + json.dumps(dotted), "/o/x")[1] == "/i/b"
    with_backing = dict(nested, backing={"driver": "raw", "file": {"filename": "/i/under"}})
    files, below = json_backing("json:" + json.dumps(with_backing), "/o/x")
    assert set(files) == {"/i/base.qcow2", "/i/under"} and below == "/i/under"
    assert json_backing("json:" + json.dumps(dict(nested, backing=None)), "/o/x")[1] is None
    nbd = {"driver": "qcow2", "file": {"driver": "nbd", "server": {"host": "h"}}}
    assert json_backing("json:" + json.dumps(nbd), "/o/x") == ([], None)
    for bad in ("json:{", "json:[1]", "json:" + json.dumps(dict(nested, backing="node1"))):
        with pytest.raises(VshxError):
            json_backing(bad, "/o/x")


def test_data_file_and_json_name_are_part_of_the_chain(tmp_path: Path):
    data = tmp_path / "base.raw"
    base = tmp_path / "base.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={data}", str(base), "1M"],
        check=True,
    )
    assert header_names(str(base)) == (None, str(data))
    assert image_files(str(base)) == [str(base), str(data)]
    spec = {"driver": "qcow2", "file": {"driver": "file", "filename": str(base)}}
    top = tmp_path / "top.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2"]
        + ["-b", "json:" + json.dumps(spec), str(top)],
        check=True,
    )
    assert chain_files(str(top)) == [str(top), str(base), str(data)]


def test_lock_is_refused_to_a_second_holder_and_removed_after(tmp_path: Path):
    image = tmp_path / "a.qcow2"
    image.write_bytes(b"")
    path, _key = lock.lock_path(str(image))
    lock.take(str(image), "vshx commit a")
    try:
        note = json.loads(Path(path).read_text())
        assert note["pid"] == os.getpid() and note["command"] == "vshx commit a"
        assert oct(os.stat(path).st_mode & 0o777) == "0o666"
        lock.take(str(tmp_path / "." / "a.qcow2"), "again")  # this process: re-entered
        other = subprocess.run(
            [
                "python3",
                "-c",
                "import fcntl,os,sys; fd=os.open(sys.argv[1], os.O_RDWR);"
                "fcntl.flock(fd, fcntl.LOCK_EX|fcntl.LOCK_NB)",
                path,
            ],
            capture_output=True,
        )
        assert other.returncode != 0  # another process cannot take it
    finally:
        lock.release_all()
    assert not os.path.exists(path)


def test_a_killed_holders_longer_note_is_replaced_whole(tmp_path: Path):
    """The note is written over the old one, then cut to its length (no truncation to 0
    first: ext4 flushes such a file when it is closed)."""
    image = tmp_path / "a.qcow2"
    image.write_bytes(b"")
    path, _key = lock.lock_path(str(image))
    Path(path).write_text(json.dumps({"pid": 1, "command": "x" * 500, "user": "gone"}) + "\n")
    lock.take(str(image), "vshx commit a")
    try:
        note = json.loads(Path(path).read_text())
        assert note["pid"] == os.getpid() and note["command"] == "vshx commit a"
    finally:
        lock.release_all()


def test_planted_lock_files_are_refused(tmp_path: Path):
    image = tmp_path / "a.qcow2"
    image.write_bytes(b"")
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    path, _key = lock.lock_path(str(image))
    os.symlink(victim, path)
    with pytest.raises(VshxError, match="symbolic link"):
        lock.take(str(image), "x")
    os.unlink(path)
    os.link(victim, path)
    with pytest.raises(VshxError, match="not a small regular file"):
        lock.take(str(image), "x")
    assert victim.read_text() == "keep me"
    lock.release_all()
