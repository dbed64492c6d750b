"""recover DOMAIN on a domain with several disks and nothing interrupted says so (exit 0), as
on a one-disk domain, instead of asking which disk."""

from __future__ import annotations

import pytest
from conftest import Lab, run_vshx

pytestmark = pytest.mark.libvirt


@pytest.mark.parametrize("lab", [2], indirect=True)
def test_recover_on_two_disks_with_nothing_to_recover(lab: Lab):
    done = run_vshx("recover", lab.name)
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    assert f"nothing to do: no job and no journal on {lab.name}" in said
    assert "which disk" not in said
    planned = run_vshx("recover", lab.name, "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert "# nothing to do: no job and no journal" in planned.stdout


@pytest.mark.parametrize("offline_lab", [2], indirect=True)
def test_recover_on_two_shut_off_disks_with_nothing_to_recover(offline_lab: Lab):
    done = run_vshx("recover", offline_lab.name)
    assert done.returncode == 0, done.stderr
    assert "nothing to do" in done.stdout + done.stderr
