"""vshx.merging.deletion.kept_below: a merged-away file kept because something else uses it
(another domain's snapshot names it) keeps every file of the plan's it reads through, however
its headers name them (relative names, symlinks), and only those.  Pure logic on real qcow2
files made by qemu-img: no libvirt."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from vshx.merging.deletion import kept_below
from vshx.storage.chain import Layer
from vshx.storage.identity import identity

WHY = "still used by snapshot s1 of vshx-other"


def qcow2(path: Path, backing: str | None = None) -> str:
    argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
    argv += ["-F", "qcow2", "-b", backing] if backing else []
    subprocess.run([*argv, str(path), *([] if backing else ["1M"])], check=True)
    return str(path)


def layers(*paths: str) -> list[Layer]:
    return [Layer(path, "qcow2", i) for i, path in enumerate(paths)]


def chain(tmp_path: Path) -> dict[str, str]:
    """base <- a <- b <- c <- d: b names a through a symlink, c names b relatively."""
    made = {"base": qcow2(tmp_path / "base.qcow2")}
    made["a"] = qcow2(tmp_path / "a.qcow2", made["base"])
    os.symlink("a.qcow2", tmp_path / "link-to-a.qcow2")
    made["b"] = qcow2(tmp_path / "b.qcow2", str(tmp_path / "link-to-a.qcow2"))
    made["c"] = qcow2(tmp_path / "c.qcow2", "b.qcow2")
    made["d"] = qcow2(tmp_path / "d.qcow2", made["c"])
    made["other"] = qcow2(tmp_path / "other.qcow2")
    return made


def test_a_kept_file_keeps_every_file_it_reads_through(tmp_path: Path):
    f = chain(tmp_path)
    files = layers(f["d"], f["c"], f["b"], f["a"], f["other"])
    found = kept_below(files, {identity(f["c"]): WHY})
    assert sorted(found) == sorted([f["b"], f["a"]])  # not d (above c), not other, not c itself
    assert found[f["a"]] == f"{f['c']}, kept ({WHY}), reads through it"


def test_files_kept_for_their_own_users_are_not_named_again(tmp_path: Path):
    f = chain(tmp_path)
    files = layers(f["c"], f["b"], f["a"], f["base"])
    found = kept_below(files, {identity(f["c"]): WHY, identity(f["a"]): "its own"})
    assert sorted(found) == sorted([f["b"], f["base"]])
    assert found[f["base"]].startswith(f"{f['c']}, kept")  # the first kept file above says why


def test_nothing_kept_keeps_nothing(tmp_path: Path):
    f = chain(tmp_path)
    assert kept_below(layers(f["c"], f["b"], f["a"]), {}) == {}
