"""A kept snapshot's saved ``<domain>`` names the chain its files' headers make (nu14 #2).

After a pull left sn2.qcow2 and sn3.qcow2 out of the chain (sn3's and sn4's moments, reading
through sn1.qcow2), deleting snapshot sn2 pulls sn1.qcow2 into the active layer: sn1.qcow2 is
kept (those files read through it), and the re-defined sn3 and sn4 spliced it out of their
``<backingStore>`` chains anyway, so a start on the pinned chain would skip it.  A removed
layer is now spliced out only below a file whose header the plan rewrites.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import URI, Lab, chain_files, destroy_lab, make_lab, run_vshx

pytestmark = pytest.mark.libvirt


def pinned(domain: str, snapshot: str) -> list[str]:
    """The file names of vda's chain as the snapshot's saved ``<domain>`` pins it."""
    xml = subprocess.run(
        ["virsh", "-c", URI, "snapshot-dumpxml", domain, snapshot],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    disk = next(
        d
        for d in ET.fromstring(xml).findall("./domain/devices/disk")
        if (t := d.find("target")) is not None and t.get("dev") == "vda"
    )
    names, node = [], disk
    while node is not None and (source := node.find("source")) is not None:
        names.append(Path(source.get("file") or "").name)
        node = node.find("backingStore")
    return names


def test_a_kept_layer_stays_in_the_chains_that_still_read_through_it(tmp_path: Path) -> None:
    lab: Lab = make_lab(tmp_path)
    try:
        pulled = run_vshx("pull", lab.name, "vda", "--base", "sn1")
        assert pulled.returncode == 0, pulled.stderr
        planned = run_vshx("snapshot-delete", lab.name, "sn2", "--route", "pull", "--dry-run")
        assert "# method: live: libvirt block pulls on the running domain" in planned.stdout
        deleted = run_vshx("snapshot-delete", lab.name, "sn2", "--route", "pull")
        assert deleted.returncode == 0, deleted.stderr
        for snapshot, moment in (("sn3", "sn2"), ("sn4", "sn3")):
            chain = pinned(lab.name, snapshot)
            if len(chain) > 1:  # a definition that pins its chain pins the headers' one
                assert chain == chain_files(lab.layer(moment)), (snapshot, chain)
            assert "sn1.qcow2" in chain_files(lab.layer(moment))
    finally:
        destroy_lab(lab)
