"""Practice labs on a remote host: ``lab-create`` and ``lab-destroy`` over ``qemu+ssh://``.

The host is this machine through the run's loopback sshd (tests/sshd.py); vshx runs where the
lab's parent directory is an empty tmpfs (``hidden``), so its directory, marker, images and
removal can only be the remote host's.  Each lab is built three times: locally, remotely, and
remotely as its ``--dry-run`` script under ``sh -e``; all three must show the same chains,
snapshots and guest data, and ``lab-destroy`` over ssh must leave nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import (
    LAB_PREFIX,
    Lab,
    destroy_lab,
    domain_exists,
    qemu_check,
    qemu_img_chain,
    run_vshx,
    snapshot_names,
)
from sshd import Sshd, hidden
from test_remote import remote_vshx, snapshot_file_names

pytestmark = [pytest.mark.libvirt, pytest.mark.root]  # hidden() mounts; qemu:///system

SHAPES = [(True, 1), (False, 2)]
SHAPE_IDS = ["running-1disk", "shutoff-2disks"]


def lab_words(name: str, directory: Path, running: bool, disks: int) -> list[str]:
    words = ["lab-create", name, "--dir", str(directory), "--layers", "2", "--disks", str(disks)]
    return words if running else [*words, "--shut-off"]


def shape(lab: Lab, chain_json: str) -> dict[str, object]:
    """What a lab is, by file names (labs differ in name and directory): vshx's chain of each
    disk (``chain --json``, sizes aside), each snapshot's files and its line in
    ``snapshot-list`` (times aside), the files in the directory, the marker's list."""
    text = chain_json.replace(str(lab.dir) + "/", "").replace(lab.name, "LAB")
    chains = json.loads(text)["chains"]
    for chain in chains:
        for layer in chain["layers"]:
            layer.pop("allocated")
    snapshots = snapshot_file_names(lab)
    marker = (lab.dir / ".vshx-lab").read_text().splitlines()
    return {
        "chains": chains,
        "snapshots": snapshots,
        "files": sorted(os.listdir(lab.dir)),
        # the files' identities (device, inode, birth) differ between any two labs
        "marker": [marker[0].replace(lab.name, "LAB"), *ids_apart(marker[1:])],
    }


def ids_apart(lines: list[str]) -> list[str]:
    """The marker's lines, each ``#id`` line only as the name it is about."""
    return [f"#id {line.rsplit('/', 1)[-1]}" if line.startswith("#id ") else line for line in lines]


def snapshot_table(listing: str) -> list[str]:
    """``snapshot-list`` rows without the creation time."""
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}")
    return [stamp.sub("TIME", line).rstrip() for line in listing.splitlines()]


def guest(lab: Lab, tmp: Path) -> dict[str, str]:
    return {disk: lab.guest_hash(tmp, disk) for disk in lab.targets}


@pytest.mark.parametrize(("running", "disks"), SHAPES, ids=SHAPE_IDS)
def test_lab_create_over_ssh_is_the_local_one_and_lab_destroy_leaves_nothing(
    running: bool, disks: int, sshd: Sshd, tmp_path: Path
) -> None:
    labs = {
        where: Lab(f"{LAB_PREFIX}{uuid.uuid4().hex[:8]}", tmp_path / where / "lab", running, disks)
        for where in ("local", "remote", "script")
    }
    for lab in labs.values():
        lab.dir.parent.mkdir()
    try:
        local = labs["local"]
        done = run_vshx(*lab_words(local.name, local.dir, running, disks))
        assert done.returncode == 0, done.stderr

        remote = labs["remote"]
        hide = [remote.dir.parent]
        done = remote_vshx(sshd, hide, *lab_words(remote.name, remote.dir, running, disks))
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr

        script = labs["script"]
        hide_script = [script.dir.parent]
        words = [*lab_words(script.name, script.dir, running, disks), "--dry-run"]
        printed = remote_vshx(sshd, hide_script, *words)
        assert printed.returncode == 0, printed.stderr
        assert not os.listdir(script.dir.parent) and not domain_exists(script.name)
        plan = printed.stdout
        assert f"'mkdir -- {script.dir}'" in plan and f"'cp /dev/stdin {script.dir}" in plan
        assert "\nssh " in plan and "'qemu-img create" in plan, plan
        ran = subprocess.run(
            hidden(hide_script, ["sh", "-e"]), input=plan, capture_output=True, text=True,
            env=sshd.env(), timeout=900,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr + plan

        shapes, tables, data = {}, {}, {}
        for where, lab in labs.items():
            vshx = run_vshx if where == "local" else None
            chains = []
            for disk in lab.targets:
                if vshx is None:
                    shown = remote_vshx(sshd, [lab.dir.parent], "chain", lab.name, disk, "--json")
                else:
                    shown = vshx("chain", lab.name, disk, "--json")
                assert shown.returncode == 0, shown.stderr
                chains.append(json.loads(shown.stdout)["chains"][0])
            shapes[where] = shape(lab, json.dumps({"chains": chains}))
            listing = run_vshx("snapshot-list", lab.name)
            assert listing.returncode == 0, listing.stderr
            tables[where] = snapshot_table(listing.stdout)
            data[where] = guest(lab, tmp_path)
            for disk in lab.targets:
                for entry in qemu_img_chain(lab.active_of(disk)):
                    qemu_check(entry["filename"])
        assert shapes["local"]["snapshots"] == {
            "sn1": ({d: f"{'' if d == 'vda' else d + '-'}base.qcow2" for d in local.targets},
                    {d: f"{'' if d == 'vda' else d + '-'}sn1.qcow2" for d in local.targets}),
            "sn2": ({d: f"{'' if d == 'vda' else d + '-'}sn1.qcow2" for d in local.targets},
                    {d: f"{'' if d == 'vda' else d + '-'}sn2.qcow2" for d in local.targets}),
        }  # fmt: skip
        for where in ("remote", "script"):
            assert shapes[where] == shapes["local"], where
            assert tables[where] == tables["local"], where
            assert data[where] == data["local"], f"{where}: the guest's data differ"

        # lab-destroy over ssh, by name alone (the directory comes from the domain's disk)
        for where in ("remote", "script"):
            lab = labs[where]
            gone = remote_vshx(sshd, [lab.dir.parent], "lab-destroy", lab.name)
            assert gone.returncode == 0 and "Traceback" not in gone.stderr, gone.stderr
            assert not domain_exists(lab.name)
            assert os.listdir(lab.dir.parent) == [], os.listdir(lab.dir.parent)
    finally:
        for lab in labs.values():
            if domain_exists(lab.name) or lab.dir.exists():
                destroy_lab(lab)


def test_lab_destroy_over_ssh_keeps_what_the_marker_does_not_list(
    sshd: Sshd, tmp_path: Path
) -> None:
    """A file of the user's own in a remote lab directory stays (and so does the directory);
    a rebuild there is refused, and nothing is changed by the refusal.  The directory's name
    is hostile: every word reaches the host as it is."""
    name = f"{LAB_PREFIX}{uuid.uuid4().hex[:8]}"
    directory = tmp_path / "odd dir $(touch pwned) 'q'" / "lab,1"
    directory.parent.mkdir()
    hide = [directory.parent]
    words = lab_words(name, directory, False, 1)
    try:
        done = remote_vshx(sshd, hide, *words)
        assert done.returncode == 0, done.stderr
        (directory / "mine.txt").write_text("keep me\n")
        before = sorted(os.listdir(directory))
        again = remote_vshx(sshd, hide, *words)
        assert again.returncode == 1 and "mine.txt" in again.stderr, again.stderr
        assert "hint:" in again.stderr and sorted(os.listdir(directory)) == before
        assert snapshot_names(name) == ["sn1", "sn2"]
        gone = remote_vshx(sshd, hide, "lab-destroy", name, "--dir", str(directory))
        assert gone.returncode == 0, gone.stderr
        assert f"keeping {directory}" in gone.stderr, gone.stderr
        assert os.listdir(directory) == ["mine.txt"] and not domain_exists(name)
        assert not list(tmp_path.rglob("pwned")) and not (Path.home() / "pwned").exists()
    finally:
        if domain_exists(name):
            destroy_lab(Lab(name, directory, False))
