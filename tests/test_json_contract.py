"""JSON is a contract: every --json document is an object with "schema": 1, checked against
its JSON Schema (docs/json/COMMAND.schema.json, draft 2020-12) on real labs' output."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import URI, Lab, chain_files, make_overlay, qemu_check, run_vshx, virsh

from vshx.spec.render import JSON_SCHEMA, to_json

jsonschema = pytest.importorskip("jsonschema", reason="pip install -e '.[dev]' (jsonschema)")

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "json"


def schema_of(command: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{command}.schema.json").read_text())


def valid(command: str, *args: str) -> dict[str, Any]:
    """Run ``vshx COMMAND ARGS --json``; its output, checked against the command's schema."""
    proc = run_vshx(command, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    jsonschema.Draft202012Validator(schema_of(command)).validate(document)
    assert document["schema"] == JSON_SCHEMA
    return document


def json_commands() -> list[str]:
    """Every command (built in or from an installed plugin) that takes --json."""
    from vshx.pluginhost.host import PluginHost
    from vshx.shell.builtins import BUILTINS

    host = PluginHost(BUILTINS)
    host.load_entry_points()
    assert not host.broken
    return sorted(
        c.name for c in host.registry.commands() if any(o.name == "json" for o in c.options)
    )


def test_every_json_command_has_a_valid_schema_file():
    commands = json_commands()
    assert {"list", "domblklist", "chain", "snapshot-list", "jobs"} <= set(commands)
    files = sorted(p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json"))
    # and plan.schema.json: `vshx --plan-json` (every changing command's dry run)
    assert files == sorted([*commands, "plan"]), "one docs/json/COMMAND.schema.json per --json"
    for command in [*commands, "plan"]:
        schema = schema_of(command)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["type"] == "object" and schema["additionalProperties"] is False
        assert schema["properties"]["schema"] == {**schema["properties"]["schema"], "const": 1}
        assert "schema" in schema["required"]


def test_the_one_writer_puts_the_schema_number_first():
    text = to_json({"chains": [], "note": "é"})
    assert json.loads(text) == {"schema": 1, "chains": [], "note": "é"}
    assert text.startswith('{\n  "schema": 1,') and "é" in text


def test_a_schema_refuses_the_old_shapes():
    """What scripts got before schema 1 (a bare list, "-" for no id, "step 2/3") is refused."""
    check = jsonschema.Draft202012Validator

    def refused(command: str, document: object) -> bool:
        return not check(schema_of(command)).is_valid(document)

    assert refused("list", [{"id": "-", "name": "d", "state": "shut off"}])
    assert refused("list", {"schema": 1, "domains": [{"id": "-", "name": "d", "state": "x"}]})
    assert not refused("list", {"schema": 1, "domains": [{"id": None, "name": "d", "state": "x"}]})
    assert refused("chain", {"schema": 1, "domain": "d", "disk": "vda", "live": True, "layers": []})
    row = {
        "kind": "journal",
        "domain": None,
        "disk": None,
        "image": "/i/top.qcow2",
        "type": "interrupted vshx",
        "progress": None,
        "step": 2,
        "steps": 3,
        "pid": None,
        "started_by": None,
        "ready": False,
        "next": "vshx recover /i/top.qcow2",
        "journal": "commit, stopped at step 2/3",
    }
    assert not refused("jobs", {"schema": 1, "jobs": [row]})
    assert refused("jobs", {"schema": 1, "jobs": [{**row, "progress": "step 2/3"}]})
    assert refused("jobs", {"schema": 1, "jobs": [{**row, "journal": ""} | {"pid": "pid 7"}]})
    assert refused("jobs", {"schema": 2, "jobs": []})


def test_inventory_documents_of_a_running_lab(lab: Lab, tmp_path: Path):
    listed = valid("list", "--all")
    mine = [d for d in listed["domains"] if d["name"] == lab.name]
    assert len(mine) == 1 and isinstance(mine[0]["id"], int) and mine[0]["state"] == "running"
    disks = valid("domblklist", lab.name)
    assert disks["domain"] == lab.name and disks["disks"][0]["target"] == "vda"
    one = valid("chain", lab.name, "vda")
    every = valid("chain", lab.name)  # every disk: the same shape, a list of chains
    assert every["chains"] == one["chains"] and len(one["chains"]) == 1
    chain = one["chains"][0]
    assert chain["live"] is True and chain["domain"] == lab.name and chain["disk"] == "vda"
    assert [os.path.basename(x["path"]) for x in chain["layers"]] == chain_files(lab.active)
    assert [x["role"] for x in chain["layers"]] == ["active", "middle", "middle", "middle", "base"]
    snapshots = valid("snapshot-list", lab.name)
    assert [s["name"] for s in snapshots["snapshots"]] == ["sn1", "sn2", "sn3", "sn4"]
    assert snapshots["snapshots"][0]["parent"] is None
    assert snapshots["snapshots"][1]["parent"] == "sn1"
    assert valid("jobs", lab.name) == {"schema": 1, "jobs": []}
    # human output keeps its shape: "-" and tables are for people, null for scripts
    assert run_vshx("list", "--all").stdout.splitlines()[0].split() == ["Id", "Name", "State"]


def test_jobs_document_of_a_block_job_and_a_domain_journal(lab: Lab, tmp_path: Path):
    before = lab.guest_hash(tmp_path)
    virsh("blockcommit", lab.name, "vda", "--active", "--bandwidth", "1")
    rows = valid("jobs", lab.name)["jobs"]
    assert [(r["kind"], r["disk"], r["image"], r["type"]) for r in rows] == [
        ("block-job", "vda", None, "active commit")
    ]
    assert isinstance(rows[0]["progress"], float) and rows[0]["step"] is None
    table = run_vshx("jobs", lab.name).stdout  # still a percent there (the job moves on)
    assert re.search(rf"{lab.name} +vda +active commit +[0-9.]+% +(yes|no) ", table), table
    aborted = run_vshx("recover", lab.name, "vda", "--abort")
    assert aborted.returncode == 0, aborted.stderr
    assert valid("jobs", lab.name)["jobs"] == []

    write_journal(f"domain={lab.name!r}", "commit sn3 into sn2")
    rows = valid("jobs", lab.name)["jobs"]
    assert [(r["kind"], r["domain"], r["disk"], r["image"]) for r in rows] == [
        ("journal", lab.name, "vda", None)
    ]
    assert (rows[0]["step"], rows[0]["steps"], rows[0]["progress"]) == (1, 2, None)
    assert rows[0]["next"] == f"vshx recover {lab.name} vda"
    assert "step 1/2" in run_vshx("jobs", lab.name).stdout
    recovered = run_vshx("recover", lab.name, "vda")
    assert recovered.returncode == 0, recovered.stderr
    assert valid("jobs", lab.name)["jobs"] == []
    assert chain_files(lab.active) == [f"{n}.qcow2" for n in ("sn4", "sn3", "sn2", "sn1", "base")]
    assert lab.guest_hash(tmp_path) == before
    for path in lab.dir.glob("*.qcow2"):
        qemu_check(path)


@pytest.mark.libvirt  # jobs asks libvirt about every domain too
def test_bare_image_documents_with_a_journal_and_a_qemu_img_at_work(tmp_path: Path):
    base, top = tmp_path / "base.qcow2", tmp_path / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    make_overlay(top, str(base))
    chain = valid("chain", str(top))["chains"]
    assert [(c["domain"], c["disk"], c["live"]) for c in chain] == [(None, None, False)]
    assert [x["index"] for x in chain[0]["layers"]] == [None, None]
    assert chain[0]["layers"][1]["backing"] is None

    write_journal(f"image={str(top)!r}", "commit top.qcow2 into base.qcow2")
    reader = subprocess.Popen(  # a qemu-io at work on the chain (read-only, shared)
        ["qemu-io", "-r", "-U", "-f", "qcow2", "-c", "sleep 600000", str(top)],
        stdout=subprocess.DEVNULL,
    )
    try:
        rows = [r for r in valid("jobs")["jobs"] if r["image"] == str(top)]
        assert [(r["kind"], r["domain"], r["disk"]) for r in rows] == [
            ("journal", None, None),
            ("qemu-img", None, None),
        ]
        assert rows[1]["pid"] == reader.pid and rows[1]["progress"] is None
        assert (rows[0]["step"], rows[0]["steps"], rows[0]["type"]) == (1, 2, "interrupted vshx")
        assert isinstance(rows[0]["pid"], int)  # the vshx that wrote it, gone now
        assert f"pid {reader.pid}" in run_vshx("jobs").stdout
    finally:
        reader.send_signal(signal.SIGKILL)
        reader.wait()
    recovered = run_vshx("recover", str(top))
    assert recovered.returncode == 0, recovered.stderr
    assert not [r for r in valid("jobs")["jobs"] if r["image"] == str(top)]
    qemu_check(top)
    qemu_check(base)


def write_journal(where: str, what: str) -> None:
    """Step 1 of a 2-step plan recorded by vshx's own journal writer, in a process that then
    ends: what a vshx killed before its first change leaves behind."""
    script = textwrap.dedent(
        f"""
        from vshx.plans.target import Target
        from vshx.plans import journal
        from vshx.plans.plan import Plan, Step
        from vshx.storage.chain import image_chain
        {where}
        if "domain" in globals():
            import libvirt
            from vshx.storage import virt
            dom = libvirt.open({URI!r}).lookupByName(domain)
            target = Target(chain=virt.domain_chain(dom, "vda"), dom=dom)
        else:
            target = Target(chain=image_chain(image))
        plan = Plan("commit")
        plan.add(Step({what!r}, ["true"]))
        plan.add(Step("check the chain", ["true"]))
        journal.write(target, plan, 1)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)


@pytest.mark.libvirt
def test_recover_forgets_the_journal_of_an_image_that_is_gone(tmp_path: Path):
    base, top = tmp_path / "base.qcow2", tmp_path / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "8M"], check=True)
    make_overlay(top, str(base))
    write_journal(f"image={str(top)!r}", "commit top.qcow2 into base.qcow2")
    top.unlink()
    listed = json.loads(run_vshx("jobs", "--json").stdout)["jobs"]
    assert [row["next"] for row in listed if row["image"] == str(top)] == [f"vshx recover {top}"]
    forgot = run_vshx("recover", str(top))
    assert forgot.returncode == 0, forgot.stderr
    listed = json.loads(run_vshx("jobs", "--json").stdout)["jobs"]
    assert [row for row in listed if row["image"] == str(top)] == []
    assert run_vshx("recover", str(top)).returncode == 1  # nothing left: no such image
