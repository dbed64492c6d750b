"""The vshx.libvirt collection's shared logic, without Ansible or libvirt: what the diff shows,
how a plan's prediction applies, how layers are found and options become vshx's words."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

UTILS = Path(__file__).resolve().parents[1] / "ansible/vshx/libvirt/plugins/module_utils/vshx.py"


@pytest.fixture(scope="module")
def utils() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vshx_module_utils", UTILS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def chain(*names: str, disk: str = "vda") -> dict[str, Any]:
    """A `chain --json` chain of /i/NAME files, active first."""
    return {
        "domain": "web",
        "disk": disk,
        "live": True,
        "layers": [{"path": f"/i/{n}", "position": p} for p, n in enumerate(names)],
    }


def snapshot(name: str, holder: str | None, moment: str = "intact") -> dict[str, Any]:
    disk = {"moment": moment, "holder": holder and f"/i/{holder}"}
    return {"name": name, "disks": {"vda": disk}}


def test_the_diff_lists_layers_base_first_then_each_moment(utils: ModuleType) -> None:
    text = utils.describe(
        [chain("sn2.qcow2", "sn1.qcow2", "base.qcow2")],
        [snapshot("s1", "base.qcow2"), snapshot("s2", None, "gone")],
    )
    assert text.splitlines() == [
        "vda: base.qcow2",
        "vda: sn1.qcow2",
        "vda: sn2.qcow2 (active)",
        "snapshot s1 on vda: intact in base.qcow2",
        "snapshot s2 on vda: gone",
    ]


def test_a_prediction_takes_the_plans_chains_and_moments(utils: ModuleType) -> None:
    before = [chain("sn3.qcow2", "sn2.qcow2", "sn1.qcow2"), chain("b.qcow2", disk="vdb")]
    snaps = [snapshot("s1", "sn1.qcow2"), snapshot("s2", "sn2.qcow2")]
    plan = {
        "chains": [{"disk": "vda", "after": chain("sn3.qcow2", "sn1.qcow2")}],
        "moments": [{"snapshot": "s2", "disk": "vda", "moment": "gone", "holder": None}],
    }
    chains, after = utils.predicted(before, snaps, plan)
    assert [len(c["layers"]) for c in chains] == [2, 1]  # vdb as it was
    assert after[1]["disks"]["vda"]["moment"] == "gone" and after[0] == snaps[0]
    _chains, deleted = utils.predicted(before, snaps, plan, deleted=["s2"])
    assert [s["name"] for s in deleted] == ["s1"]


def test_layers_by_path_name_or_stem_and_never_by_index(utils: ModuleType) -> None:
    found = chain("sn2.qcow2", "sn1.qcow2")
    assert utils.find_layer(found, "sn1.qcow2")["position"] == 1
    assert utils.find_layer(found, "/i/sn1.qcow2")["position"] == 1
    assert utils.find_layer(found, "sn1")["position"] == 1
    assert utils.find_layer(found, "sn3.qcow2") is None
    assert utils.INDEX.match("vda[2]") and not utils.INDEX.match("sn[2].qcow2")


def test_options_become_the_clis_words(utils: ModuleType) -> None:
    params = {"base": "-odd name", "active": True, "delete": False, "keep_relative": True,
              "timeout": 30, "scan": None}  # fmt: skip
    words = utils.option_words(params, ["base", "active", "delete", "keep_relative", "timeout",
                                        "scan"])  # fmt: skip
    assert words == ["--base=-odd name", "--active", "--keep-relative", "--timeout=30"]


def test_a_top_out_of_the_chain_counts_as_merged_only_while_its_file_is_there(
    utils: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / "sn1.qcow2").write_bytes(b"")
    (tmp_path / "sn3.qcow2").write_bytes(b"")
    found = {"layers": [{"path": str(tmp_path / "sn1.qcow2"), "position": 0}]}
    top = str(tmp_path / "sn3.qcow2")
    assert utils.beside(found, "sn3.qcow2") == utils.beside(found, "sn3") == top
    assert utils.beside(found, top) == top
    assert utils.beside(found, "typo.qcow2") is None
    assert utils.is_local(None) and utils.is_local("qemu:///system")
    assert not utils.is_local("qemu+ssh://root@kvm1/system")


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img (qemu-utils)")
def test_only_a_top_that_reads_through_the_base_counts_as_merged(
    utils: ModuleType, tmp_path: Path
) -> None:
    """A file beside the chain is taken as a merged top only while its backing chain names
    the base: another disk's layer or an unrelated file is left to vshx's refusal."""

    def run(argv: list[str]) -> tuple[int, str, str]:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        return done.returncode, done.stdout, done.stderr

    for name, backing in (("base", None), ("sn1", "base"), ("other", None), ("elsewhere", "other")):
        argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
        argv += ["-F", "qcow2", "-b", str(tmp_path / f"{backing}.qcow2")] if backing else []
        subprocess.run([*argv, str(tmp_path / f"{name}.qcow2"), "1M"], check=True)
    base = {"path": str(tmp_path / "base.qcow2"), "position": 0}
    assert utils.reads_through(run, str(tmp_path / "sn1.qcow2"), [base])
    assert not utils.reads_through(run, str(tmp_path / "elsewhere.qcow2"), [base])
    assert not utils.reads_through(run, "/etc/passwd", [base])
