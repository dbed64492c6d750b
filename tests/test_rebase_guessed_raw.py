"""rebase IMAGE --backing FILE, FILE outside the chain with no image header (a text file such
as /etc/passwd: qemu-img's probe calls any such file raw) and no --backing-format: refused,
nothing changed, as ``qemu-img rebase`` refuses a backing without -F ("backing format must be
specified"); with -F raw it is taken.  Real qemu-img on bare images."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import file_state, make_overlay, run_vshx

pytestmark = pytest.mark.libvirt  # the usage scan asks libvirtd


def backing_of(image: Path) -> tuple[str | None, str | None]:
    argv = ["qemu-img", "info", "-U", "--output=json", str(image)]
    info = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    return info.get("backing-filename"), info.get("backing-filename-format")


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, Path]:
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1M"], check=True)
    top = tmp_path / "top.qcow2"
    make_overlay(top, str(base))
    raw = tmp_path / "disk.img"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(raw), "1M"], check=True)
    return top, raw


@pytest.mark.parametrize("unsafe", [False, True], ids=["safe", "unsafe"])
@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_a_text_file_as_backing_is_refused(images, tmp_path: Path, unsafe: bool, dry_run: bool):
    top, _raw = images
    # what qemu-img itself does with it
    native = subprocess.run(
        ["qemu-img", "rebase", "-b", "/etc/passwd", str(top)], capture_output=True, text=True
    )
    assert native.returncode == 1 and "backing format must be specified" in native.stderr
    before = file_state(tmp_path)
    flags = (["-u"] if unsafe else []) + (["--dry-run"] if dry_run else [])
    done = run_vshx("rebase", str(top), "--backing", "/etc/passwd", *flags)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "error: new backing '/etc/passwd' has no disk image header" in done.stderr
    assert "hint:" in done.stderr and "--backing-format raw" in done.stderr
    assert "Traceback" not in done.stderr and "qemu-img rebase" not in done.stdout
    assert file_state(tmp_path) == before
    assert backing_of(top) == (str(tmp_path / "base.qcow2"), "qcow2")


def test_a_raw_image_needs_its_format_said(images, tmp_path: Path):
    top, raw = images
    refused = run_vshx("rebase", str(top), "--backing", str(raw))
    assert refused.returncode == 1 and "--backing-format raw" in refused.stderr
    assert backing_of(top)[0] == str(tmp_path / "base.qcow2")
    done = run_vshx("rebase", str(top), "--backing", str(raw), "--backing-format", "raw")
    assert done.returncode == 0, done.stderr
    assert backing_of(top) == (str(raw), "raw")


def test_a_qcow2_header_in_a_raw_disk_is_no_proof_of_its_format(images, tmp_path: Path):
    """atk12 F2: a raw disk whose guest wrote a qcow2 header naming another file of the host
    probes as qcow2; vshx wrote `-F qcow2` and the chain would read through that file.  A
    file outside the chain now needs --backing-format whatever its content says; with it,
    the rebase is done as asked."""
    top, _raw = images
    secret = tmp_path / "secret.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(secret), "1M"], check=True)
    planted = tmp_path / "guest.raw"  # a raw disk whose first bytes are a qcow2 header
    make_overlay(planted, str(secret))
    subprocess.run(["truncate", "-s", "1M", str(planted)], check=True)
    before = file_state(tmp_path)
    for flags in ([], ["--dry-run"], ["-u"]):
        refused = run_vshx("rebase", str(top), "--backing", str(planted), *flags)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "outside the chain" in refused.stderr and "--backing-format qcow2" in refused.stderr
        assert "qemu-img rebase" not in refused.stdout and "Traceback" not in refused.stderr
    assert file_state(tmp_path) == before
    asked = run_vshx("rebase", str(top), "--backing", str(planted), "--backing-format", "raw")
    assert asked.returncode == 0, asked.stderr
    assert backing_of(top) == (str(planted), "raw")


def test_a_format_that_contradicts_an_in_chain_layer_is_refused(tmp_path: Path):
    """atk13 F5: `rebase TOP --backing IN-CHAIN-LAYER -F raw` on a qcow2 layer: qemu-img's safe
    rebase compares against the layer as the chain opens it (qcow2), then writes raw into the
    header, and the guest's view changed.  A layer of the chain has its format from the
    header above it: a contradicting --backing-format is refused, nothing changed; the same
    format is taken."""
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1M"], check=True)
    mid, top = tmp_path / "mid.qcow2", tmp_path / "top.qcow2"
    make_overlay(mid, str(base))
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -q -P 0x5a 0 64k", str(mid)], check=True)
    make_overlay(top, str(mid))
    before = file_state(tmp_path)
    for flags in ([], ["--dry-run"], ["-u"]):
        refused = run_vshx("rebase", str(top), "--backing", str(base), "-F", "raw", *flags)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "a qcow2 layer of this chain" in refused.stderr and "hint:" in refused.stderr
    assert file_state(tmp_path) == before
    same = run_vshx("rebase", str(top), "--backing", str(base), "-F", "qcow2")
    assert same.returncode == 0, same.stderr
    assert backing_of(top) == (str(base), "qcow2")
