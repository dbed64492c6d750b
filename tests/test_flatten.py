"""flatten picks the cheapest safe route; the guest sees the same bytes by either route."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import (
    Lab,
    chain_files,
    destroy_lab,
    file_state,
    make_lab,
    make_overlay,
    qemu_check,
    run_vshx,
)

pytestmark = pytest.mark.libvirt  # needs root, libvirtd and QEMU


def flatten(lab: Lab, *extra: str) -> subprocess.CompletedProcess[str]:
    proc = run_vshx("flatten", lab.name, "vda", *extra)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.parametrize("running", [True, False], ids=["live", "offline"])
@pytest.mark.parametrize("route", ["commit", "pull"])
def test_flatten_by_each_route_keeps_the_guest_bytes(tmp_path: Path, running: bool, route: str):
    lab = make_lab(tmp_path, running=running)
    try:
        before = lab.guest_hash(tmp_path)
        proc = flatten(lab, "--route", route)
        assert len(chain_files(lab.active)) == 1
        expected = "base.qcow2" if route == "commit" else "sn4.qcow2"
        assert chain_files(lab.active) == [expected]
        assert lab.guest_hash(tmp_path) == before
        qemu_check(lab.active)
        assert "Traceback" not in proc.stderr
    finally:
        destroy_lab(lab)


def test_flatten_picks_the_commit_under_a_big_private_base(tmp_path: Path):
    lab = make_lab(tmp_path, base_fill=48)
    try:
        plan = flatten(lab, "--dry-run").stdout
        assert "# * commit" in plan and "#   pull" in plan
        assert "overwrites base.qcow2" in plan and "overwrites sn4.qcow2" in plan
        assert "blockcommit" in plan and "--active --pivot" in plan
        before = lab.guest_hash(tmp_path)
        flatten(lab)
        assert chain_files(lab.active) == ["base.qcow2"]
        assert lab.guest_hash(tmp_path) == before
    finally:
        destroy_lab(lab)


def test_flatten_pulls_when_the_base_is_shared_or_a_template(offline_lab: Lab, tmp_path: Path):
    lab = offline_lab
    other = lab.dir / "other.qcow2"
    make_overlay(other, str(lab.layer("base")))
    untouched = file_state(lab.dir)
    plan = flatten(lab, "--dry-run").stdout
    assert "# * pull" in plan and f"image {other}" in plan
    refused = run_vshx("flatten", lab.name, "vda", "--route", "commit")
    assert refused.returncode == 1 and "also used by" in refused.stderr
    assert file_state(lab.dir) == untouched
    other.unlink()
    os.chmod(lab.layer("base"), 0o444)
    template = flatten(lab, "--dry-run").stdout
    assert "# * pull" in template and "read-only by its file mode" in template
    os.chmod(lab.layer("base"), 0o644)


def test_flatten_dry_run_script_reaches_the_same_state(tmp_path: Path):
    real = make_lab(tmp_path, running=False, dirname="real")
    scripted = make_lab(tmp_path, running=False, dirname="scripted")
    try:
        flatten(real)
        script = run_vshx("flatten", scripted.name, "vda", "--dry-run").stdout
        ran = subprocess.run(["sh", "-e"], input=script, capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr
        assert chain_files(real.active) == chain_files(scripted.active)
        assert real.guest_hash(tmp_path) == scripted.guest_hash(tmp_path)
    finally:
        destroy_lab(real)
        destroy_lab(scripted)


def test_flatten_of_a_single_file_is_nothing_to_do(tmp_path: Path):
    image = tmp_path / "one.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"], check=True)
    proc = run_vshx("flatten", str(image))
    assert proc.returncode == 0 and "nothing to do" in proc.stdout
