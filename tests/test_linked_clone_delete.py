"""snapshot-delete where linked clones read the file its commit would write: refused, and
the hint names the route that is safe where there is one (the current snapshot's moment
pulled up into the active layer changes no one else's view), not only --force."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import (
    chain_files,
    define_domain,
    destroy_lab,
    file_state,
    guest_hash,
    make_lab,
    make_overlay,
    run_vshx,
    virsh,
)

pytestmark = pytest.mark.libvirt


def test_a_delete_into_a_file_a_clone_reads_names_the_pull_route(tmp_path: Path) -> None:
    lab = make_lab(tmp_path, running=False)
    clone = lab.dir / "clone.qcow2"
    make_overlay(clone, str(lab.layer("sn3")))  # a linked clone on sn4's moment, sn3.qcow2
    other = f"{lab.name}-clone"
    define_domain(other, {"vda": clone})
    try:
        before = file_state(lab.dir)
        seen, clone_seen = lab.guest_hash(tmp_path), guest_hash(clone, tmp_path)
        refused = run_vshx("snapshot-delete", lab.name, "sn4")
        assert refused.returncode == 1, refused.stderr
        assert "would change what these see" in refused.stderr and other in refused.stderr
        assert "hint: add --route pull" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr and file_state(lab.dir) == before
        done = run_vshx("snapshot-delete", lab.name, "sn4", "--route", "pull")
        assert done.returncode == 0, done.stderr
        assert "sn3.qcow2" not in chain_files(lab.active)
        assert lab.guest_hash(tmp_path) == seen
        assert guest_hash(clone, tmp_path) == clone_seen
    finally:
        virsh("undefine", other)
        destroy_lab(lab)
