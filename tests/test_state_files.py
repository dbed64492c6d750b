"""vshx's state and cache files: written only in directories that are the running user's own.

Root running with a user's XDG_STATE_HOME / XDG_CACHE_HOME (``su`` without ``-``, ``sudo -E``)
used to follow a symlink planted at ``<name>.<pid>.tmp`` and truncate any file.  Now nothing at
a predictable name is followed, and a directory that is not ours is not written at all.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import URI, qemu_check

from vshx.errors import VshxError
from vshx.plans import journal
from vshx.storage import statefiles
from vshx.storage.statefiles import Place, check_owned, loose_mode, xdg_home

OTHER_UID = 65534  # nobody
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant another's files")


def fake_stat(mode: int, uid: int) -> os.stat_result:
    return os.stat_result((mode, 1, 1, 1, uid, uid, 0, 0, 0, 0))


def test_owner_and_mode_checks():
    me = os.geteuid()
    check_owned(fake_stat(stat.S_IFDIR | 0o700, me), "d")
    with pytest.raises(statefiles.Unsafe, match="owned by uid 1234"):
        check_owned(fake_stat(stat.S_IFDIR | 0o700, 1234), "d", uid=me if me != 1234 else 0)
    with pytest.raises(statefiles.Unsafe, match="not a directory"):
        check_owned(fake_stat(stat.S_IFLNK | 0o777, me), "d")
    assert not loose_mode(stat.S_IFDIR | 0o700)
    assert loose_mode(stat.S_IFDIR | 0o770) and loose_mode(stat.S_IFDIR | 0o701)
    assert loose_mode(stat.S_IFDIR | 0o1777)


def test_xdg_homes_are_computed_in_one_place(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "s"))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert xdg_home("state") == str(tmp_path / "s")
    assert xdg_home("cache") == str(tmp_path / "home" / ".cache")
    assert xdg_home("data", "/h") == "/h/.local/share"


def test_files_are_private_and_a_loose_own_directory_is_tightened(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "vshx").mkdir(mode=0o755)
    os.chmod(tmp_path / "vshx", 0o755)
    assert Place("cache").write("x.json", "{}")
    assert stat.S_IMODE((tmp_path / "vshx").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "vshx" / "x.json").stat().st_mode) == 0o600
    assert Place("cache").read("x.json") == "{}"
    assert os.listdir(tmp_path / "vshx") == ["x.json"]  # no temporary file left
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "fresh"))
    Place("state", "journal").write("j.json", "1")
    for part in ("fresh/vshx", "fresh/vshx/journal"):
        assert stat.S_IMODE((tmp_path / part).stat().st_mode) == 0o700


def test_a_symlinked_directory_or_file_is_never_followed(monkeypatch, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "vshx").symlink_to(elsewhere)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    assert not Place("cache").write("x.json", "{}")  # a cache is simply not written
    assert Place("cache").read("x.json") is None
    assert list(elsewhere.iterdir()) == []
    # a symlink inside our own directory, at a file's name: not read through, replaced
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache2"))
    assert Place("cache").write("y.json", "{}")
    (tmp_path / "cache2" / "vshx" / "y.json").unlink()
    (tmp_path / "cache2" / "vshx" / "y.json").symlink_to(victim)
    assert Place("cache").read("y.json") is None
    assert Place("cache").write("y.json", "new")
    assert victim.read_text() == "precious"


def test_state_falls_back_to_the_users_own_home_then_refuses(monkeypatch, tmp_path):
    planted = tmp_path / "planted"
    planted.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    (state / "vshx").symlink_to(planted)
    own = tmp_path / "own"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.setattr(statefiles, "own_home", lambda: str(own))
    place = Place("state", "journal")
    place.write("j.json", "entry")
    assert (own / ".local" / "state" / "vshx" / "journal" / "j.json").read_text() == "entry"
    assert place.read("j.json") == "entry"  # read where it was written
    assert place.path("j.json").startswith(str(own))
    assert list(planted.iterdir()) == []
    (own / ".local" / "state" / "vshx").chmod(0o700)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / ".local").write_text("not a directory")
    monkeypatch.setattr(statefiles, "own_home", lambda: str(bad))
    with pytest.raises(VshxError) as refused:
        place.write("j.json", "entry")
    assert refused.value.hint and "XDG_STATE_HOME" in refused.value.hint


@root_only
def test_another_users_directory_is_not_used(monkeypatch, tmp_path):
    theirs = tmp_path / "theirs"
    (theirs / "vshx").mkdir(parents=True)
    os.chown(theirs, OTHER_UID, OTHER_UID)
    os.chown(theirs / "vshx", OTHER_UID, OTHER_UID)
    monkeypatch.setenv("XDG_CACHE_HOME", str(theirs))
    assert not Place("cache").write("x.json", "{}")
    assert list((theirs / "vshx").iterdir()) == []
    (theirs / "vshx").rmdir()  # their home, no vshx directory yet: none is made there
    assert not Place("cache").write("x.json", "{}")
    assert list(theirs.iterdir()) == []


def tree(directory: Path) -> dict[str, tuple[int, str]]:
    """Every entry under a directory: owner and what it is (a link's target, a file's text)."""
    found = {}
    for path in sorted(directory.rglob("*")):
        st = path.lstat()
        what = os.readlink(path) if path.is_symlink() else ""
        if path.is_file() and not path.is_symlink():
            what = path.read_text()
        found[str(path.relative_to(directory))] = (st.st_uid, what)
    return found


@root_only
def test_root_with_a_users_xdg_dirs_follows_no_planted_symlink(tmp_path, monkeypatch):
    """The attack of issue 23 item 7, on a real merge of a bare image: root runs vshx with
    a user's XDG dirs where that user planted symlinks at every predictable name (with the
    pid vshx will have: the shell plants them, then execs vshx in the same process)."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    home = tmp_path / "alice"
    state, cache = home / "state", home / "cache"
    (state / "vshx" / "journal").mkdir(parents=True)
    (cache / "vshx").mkdir(parents=True)
    images = tmp_path / "images"
    images.mkdir()
    base, top = images / "base.qcow2", images / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(top)],
        check=True,
    )
    subprocess.run(
        ["qemu-io", "-c", "write -P 0x5a 1M 1M", str(top)], check=True, capture_output=True
    )
    name = journal.state_name(str(top))
    virsh_stamp = os.stat(
        subprocess.run(["which", "virsh"], capture_output=True, text=True).stdout.strip()
    ).st_mtime_ns
    planted = [
        state / "vshx" / "journal" / name,
        cache / "vshx" / "commands.json",
        cache / "vshx" / f"virsh-commands-{virsh_stamp}.txt",
    ]
    (state / "vshx" / "journal" / name).symlink_to(victim)  # a read would follow it
    for path in [home, *home.rglob("*")]:
        os.lchown(path, OTHER_UID, OTHER_UID)
    before = tree(home)
    links = " ".join(f"'{p}'" for p in planted)
    script = (
        f'for n in {links}; do ln -s "{victim}" "$n.$$.tmp"; chown -h {OTHER_UID} "$n.$$.tmp"; '
        f'done; exec "$@"'
    )
    env = dict(os.environ, XDG_STATE_HOME=str(state), XDG_CACHE_HOME=str(cache))
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    for argv in (
        ["commit", str(top), "--dry-run"],
        ["nosuchcommand-x"],  # an unknown word reads virsh's command list (a cache)
        ["commit", str(top)],
    ):
        proc = subprocess.run(
            ["sh", "-c", script, "vshx", sys.executable, "-m", "vshx", "-c", URI, *argv],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert "Traceback" not in proc.stderr
        if argv[0] == "commit":
            assert proc.returncode == 0, proc.stderr
        assert victim.read_text() == "precious\n"
        after = tree(home)
        new = {k: v for k, v in after.items() if k not in before}
        assert {k: v for k, v in after.items() if k in before} == before  # nothing rewritten
        assert all(v == (OTHER_UID, str(victim)) for v in new.values()), new  # only their links
    # the merge happened, its journal went to root's own state directory and was cleared
    view = subprocess.run(
        ["qemu-io", "-c", "read -P 0x5a 1M 1M", str(base)], capture_output=True, text=True
    )
    assert "Pattern verification failed" not in view.stdout, view.stdout
    qemu_check(base)
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    assert journal.state_file(str(top)).startswith(statefiles.own_home())
    assert journal.read_image(str(top)) is None


def test_a_base_we_cannot_write_moves_state_to_our_own_home(monkeypatch, tmp_path):
    readonly = tmp_path / "ro"
    readonly.mkdir()
    own = tmp_path / "own"
    monkeypatch.setenv("XDG_STATE_HOME", str(readonly))
    monkeypatch.setattr(statefiles, "own_home", lambda: str(own))
    monkeypatch.setattr(statefiles.os, "mkdir", _refuse_mkdir_in(str(readonly)))
    Place("state", "journal").write("j.json", "x")
    assert (own / ".local" / "state" / "vshx" / "journal" / "j.json").read_text() == "x"


def _refuse_mkdir_in(where: str):
    real = os.mkdir

    def mkdir(name, mode=0o777, *, dir_fd=None):
        if dir_fd is not None and os.readlink(f"/proc/self/fd/{dir_fd}") == where:
            raise PermissionError(13, "Permission denied")
        return real(name, mode, dir_fd=dir_fd)

    return mkdir
