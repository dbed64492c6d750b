"""`vshx --plan-json`: a dry run as one JSON document, what the vshx.libvirt modules read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import URI, Lab, file_state

from vshx.plans.plan import Plan, Step
from vshx.plans.plan_json import nothing_document, plan_document
from vshx.storage.chain import Chain, Layer
from vshx.storage.moments import Verdict

jsonschema = pytest.importorskip("jsonschema", reason="pip install -e '.[dev]' (jsonschema)")
SCHEMA = json.loads(
    (Path(__file__).resolve().parents[1] / "docs" / "json" / "plan.schema.json").read_text()
)


def valid(text: str) -> dict[str, Any]:
    document = json.loads(text)
    jsonschema.Draft202012Validator(SCHEMA).validate(document)
    return document


def chain(*names: str) -> Chain:
    """A chain of files /i/NAME, active first."""
    layers = [
        Layer(f"/i/{name}", "qcow2", position, f"/i/{below}" if below else None)
        for position, (name, below) in enumerate(zip(names, [*names[1:], None], strict=True))
    ]
    return Chain(layers, "web", "vda", live=True)


def test_a_plan_document_has_the_chains_the_moments_and_the_steps() -> None:
    before = chain("sn3.qcow2", "sn2.qcow2", "sn1.qcow2")
    plan = Plan("commit sn2.qcow2 down into sn1.qcow2 (web vda)", method="live")
    plan.before, plan.after = before, before.without([before.layers[1]])
    plan.keeps = ["keeps: s1 (sn1.qcow2)", "loses: s2 (sn1.qcow2 takes in sn2.qcow2)"]
    plan.losing = ["s2"]
    plan.verdicts = [
        Verdict("s1", 1, "vda", "intact", "/i/sn1.qcow2", ""),
        Verdict("s2", 2, "vda", "gone", None, "sn1.qcow2 takes in sn2.qcow2"),
    ]
    plan.add(Step("check: free space", ["true"], changes=False))
    plan.add(Step("block commit", ["virsh", "-c", "qemu:///system", "blockcommit", "web", "vda"]))
    document = valid(plan_document(plan, "commit"))
    assert document["command"] == "commit" and document["nothing_to_do"] is None
    (change,) = document["chains"]
    assert [x["path"] for x in change["after"]["layers"]] == ["/i/sn3.qcow2", "/i/sn1.qcow2"]
    assert len(change["before"]["layers"]) == 3 and change["disk"] == "vda"
    assert document["loses"] == ["s2"] and document["keeps"] == plan.keeps
    assert document["moments"][1] == {"snapshot": "s2", "disk": "vda", "moment": "gone",
                                      "holder": None}  # fmt: skip
    assert [s["changes"] for s in document["steps"]] == [False, True]
    assert document["steps"][1]["command"].startswith("virsh -c qemu:///system blockcommit")
    assert document["script"] == plan.script()


def test_a_plan_over_several_disks_lists_each_and_nothing_to_do_has_no_steps() -> None:
    plan = Plan("delete snapshot s2 of web on every disk")
    vda, vdb = chain("a.qcow2", "b.qcow2"), chain("c.qcow2", "d.qcow2")
    vdb = vdb._replace(disk="vdb")
    plan.chains = [(vda, vda.without([vda.layers[1]])), (vdb, vdb)]
    document = valid(plan_document(plan, "snapshot-delete"))
    assert [c["disk"] for c in document["chains"]] == ["vda", "vdb"]
    assert document["moments"] is None and document["method"] is None
    nothing = valid(nothing_document("pull", "sn1.qcow2 already is the backing file of a"))
    assert nothing["nothing_to_do"].startswith("sn1.qcow2") and nothing["steps"] == []


@pytest.mark.libvirt
def test_plan_json_changes_nothing_and_says_nothing_to_do(offline_lab: Lab) -> None:
    """On a real shut-off lab: the document of a pull, nothing changed; a met request."""
    state = file_state(offline_lab.dir)

    def plan_json(*words: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vshx", "-c", URI, "--plan-json", *words],
            capture_output=True,
            text=True,
        )

    done = plan_json("pull", offline_lab.name, "vda", "--base", "sn1.qcow2")
    assert done.returncode == 0, done.stderr
    document = valid(done.stdout)
    (change,) = document["chains"]
    names = [Path(x["path"]).name for x in change["after"]["layers"]]
    assert names == ["sn4.qcow2", "sn1.qcow2", "base.qcow2"]
    assert document["loses"] == []  # a pull takes files out unchanged: moments stay
    assert "qemu-img rebase" in document["script"]
    met = plan_json("pull", offline_lab.name, "vda", "--base", "sn3.qcow2")
    assert met.returncode == 0, met.stderr
    assert valid(met.stdout)["nothing_to_do"].startswith("sn3.qcow2 already is the backing")
    deleting = valid(plan_json("snapshot-delete", offline_lab.name, "sn2").stdout)
    assert deleting["command"] == "snapshot-delete" and deleting["loses"] == ["sn2"]
    (change,) = deleting["chains"]  # one disk: sn2.qcow2 goes into sn1.qcow2
    names = [Path(x["path"]).name for x in change["after"]["layers"]]
    assert names == ["sn4.qcow2", "sn3.qcow2", "sn1.qcow2", "base.qcow2"]
    assert {m["snapshot"] for m in deleting["moments"]} == {"sn1", "sn3", "sn4"}
    refused = plan_json("pull", offline_lab.name, "vda", "--base", "nosuch.qcow2")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("error: ") and "hint: " in refused.stderr
    assert file_state(offline_lab.dir) == state
