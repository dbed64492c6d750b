"""The vshx.libvirt collection: built, installed, and run by ansible-core on two hosts.

Both inventory hosts are this machine reached through the loopback sshd (tests/sshd.py) under
two names, each with its own domain (one running: live block jobs; one shut off: qemu-img).
Check mode changes nothing and shows the plan with a diff; the real run merges on both with
the guest's data intact; a second run changes nothing; a failing host reports vshx's error and
hint while the other completes.  Everything Ansible writes stays in the test's directories.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    URI,
    Lab,
    chain_files,
    destroy_lab,
    file_state,
    make_lab,
    qemu_check,
    snapshot_names,
    virsh,
)
from sshd import Sshd

pytestmark = [pytest.mark.libvirt, pytest.mark.root]

BIN = Path(sys.executable).parent
COLLECTION = Path(__file__).resolve().parents[1] / "ansible" / "vshx" / "libvirt"
HOSTS = ("alpha", "beta")
MODULES = ("commit", "pull", "flatten", "snapshot_delete", "chain_info")

PLAYBOOK = """\
- hosts: all
  gather_facts: false
  environment: "{{ vshx_environment }}"
  tasks:
    - name: merge sn2 and sn3 into sn1
      vshx.libvirt.commit:
        uri: "{{ vshx_uri }}"
        domain: "{{ domain }}"
        disk: vda
        base: sn1.qcow2
        top: sn3.qcow2
    - name: delete snapshot sn2, whose moment the merge lost
      vshx.libvirt.snapshot_delete:
        uri: "{{ vshx_uri }}"
        domain: "{{ domain }}"
        snapshot: sn2
    - name: read the chain
      vshx.libvirt.chain_info:
        uri: "{{ vshx_uri }}"
        domain: "{{ domain }}"
        disk: vda
"""

# every task's result per host, as JSON lines: ansible-core ships no json stdout callback
RECORDER = """\
import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "vshx_record"
    CALLBACK_NEEDS_ENABLED = True

    def record(self, result, status):
        line = {"host": result._host.get_name(), "task": result._task.get_name(),
                "status": status, "result": result._result}
        with open(os.environ["VSHX_ANSIBLE_RECORD"], "a") as out:
            out.write(json.dumps(line) + "\\n")

    def v2_runner_on_ok(self, result):
        self.record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self.record(result, "failed")

    def v2_runner_on_unreachable(self, result):
        self.record(result, "unreachable")
"""

PULL = """\
- hosts: all
  gather_facts: false
  environment: "{{ vshx_environment }}"
  tasks:
    - name: pull sn1 up into the active layer
      vshx.libvirt.pull:
        uri: "{{ vshx_uri }}"
        domain: "{{ domain }}"
        disk: vda
        base: "{{ pull_base }}"
    - name: flatten the disk
      vshx.libvirt.flatten:
        uri: "{{ vshx_uri }}"
        domain: "{{ domain }}"
        disk: vda
    - name: flatten it again
      vshx.libvirt.flatten:
        uri: "{{ vshx_uri }}"
        domain: "{{ domain }}"
        disk: vda
"""


def ansible_env(root: Path, control: Path) -> dict[str, str]:
    """ansible-core's homes, temporary and control directories, all under the test's own."""
    env = dict(os.environ)
    env.update(
        ANSIBLE_HOME=str(root / "home"),
        ANSIBLE_LOCAL_TEMP=str(root / "local-tmp"),
        ANSIBLE_REMOTE_TEMP=str(root / "remote-tmp"),
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(control),
        ANSIBLE_COLLECTIONS_PATH=str(root / "collections"),
        ANSIBLE_CONFIG=str(root / "ansible.cfg"),  # none: the defaults, never a cwd's file
        ANSIBLE_CALLBACK_PLUGINS=str(root / "callback_plugins"),
        ANSIBLE_CALLBACKS_ENABLED="vshx_record",
        VSHX_ANSIBLE_RECORD=str(root / "record.jsonl"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_PIPELINING="1",
        # ssh's shared connection ends soon after the last task (the test's own ssh processes)
        ANSIBLE_SSH_ARGS="-o ControlMaster=auto -o ControlPersist=5s",
        ANSIBLE_GALAXY_CACHE_DIR=str(root / "galaxy-cache"),
        LC_ALL="C.UTF-8",
    )
    env["PATH"] = f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def install_collection(root: Path, env: dict[str, str]) -> None:
    """`ansible-galaxy collection build` of the repository's collection, then its install."""
    built = subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "build", str(COLLECTION),
         "--output-path", str(root)],
        capture_output=True, text=True, env=env, cwd=root,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (tarball,) = root.glob("vshx-libvirt-*.tar.gz")
    installed = subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "install", str(tarball),
         "-p", str(root / "collections")],
        capture_output=True, text=True, env=env, cwd=root,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert (
        root / "collections/ansible_collections/vshx/libvirt/plugins/modules/commit.py"
    ).exists()
    modules = [f"vshx.libvirt.{m}" for m in MODULES]
    doc = subprocess.run(
        [str(BIN / "ansible-doc"), "-t", "module", "--json", *modules],
        capture_output=True, text=True, env=env, cwd=root,
    )  # fmt: skip
    assert doc.returncode == 0, doc.stderr
    docs = json.loads(doc.stdout)
    assert sorted(docs) == sorted(modules)
    for module in modules:
        assert docs[module]["examples"] and docs[module]["return"], module
    options = docs["vshx.libvirt.commit"]["doc"]["options"]
    assert {"uri", "domain", "disk", "base", "top", "active", "pivot", "delete"} <= set(options)
    assert {"domain", "snapshot"} <= set(docs["vshx.libvirt.snapshot_delete"]["doc"]["options"])


def inventory(sshd: Sshd, labs: dict[str, Lab], root: Path, extra: dict[str, dict]) -> Path:
    """Two hosts, both 127.0.0.1 through the sshd; vshx on the managed side runs this
    checkout with the test's own XDG homes (as the playbook's environment)."""
    homes = {k: v for k, v in os.environ.items() if k.startswith("XDG_")}
    environment = {
        **homes,
        "PATH": f"{BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "VSHX_COMPLETE_DEADLINE": "15",
    }
    hosts = {
        name: {
            "ansible_host": "127.0.0.1",
            "ansible_port": sshd.port,
            "ansible_user": sshd.user,
            "ansible_ssh_private_key_file": str(sshd.key),
            "ansible_ssh_common_args": f"-F {sshd.directory / 'ssh_config'}",
            "ansible_python_interpreter": sys.executable,
            "domain": labs[name].name,
            "vshx_uri": URI,
            "vshx_environment": environment,
            **extra.get(name, {}),
        }
        for name in HOSTS
    }
    path = root / "inventory.json"
    path.write_text(json.dumps({"all": {"hosts": hosts}}))
    return path


class Run:
    """One ansible-playbook run: its exit status, its screen output, and per host each task's
    result (by task name)."""

    def __init__(self, done: subprocess.CompletedProcess[str], lines: list[str]) -> None:
        self.status = done.returncode
        self.output = done.stdout + done.stderr
        self.results: dict[str, dict[str, dict[str, Any]]] = {h: {} for h in HOSTS}
        for line in lines:
            entry = json.loads(line)
            self.results[entry["host"]][entry["task"]] = {**entry["result"], "_": entry["status"]}

    def __getitem__(self, host: str) -> dict[str, dict[str, Any]]:
        return self.results[host]


def playbook(root: Path, env: dict[str, str], hosts: Path, text: str, *flags: str) -> Run:
    """Run a playbook on the two hosts."""
    book = root / "site.yml"
    book.write_text(text)
    record = Path(env["VSHX_ANSIBLE_RECORD"])
    record.unlink(missing_ok=True)
    done = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(hosts), str(book), *flags],
        capture_output=True, text=True, env=env, cwd=root, timeout=900,
    )  # fmt: skip
    lines = record.read_text().splitlines() if record.exists() else []
    assert lines, done.stdout + done.stderr
    return Run(done, lines)


def one(diff: dict[str, str] | list[dict[str, str]]) -> dict[str, str]:
    """A module's diff, as the json callback shows it (a list when ansible gathered it)."""
    if isinstance(diff, list):
        (diff,) = diff
    return diff


def guest_view(lab: Lab, tmp: Path) -> str:
    return lab.guest_hash(tmp)


def test_a_playbook_on_two_hosts_checks_merges_and_then_changes_nothing(
    sshd: Sshd, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if shutil.which("ansible-playbook", path=str(BIN)) is None:
        pytest.skip("ansible-core is not installed (pip install -e '.[dev]')")
    root = tmp_path / "ansible"
    root.mkdir()
    (root / "ansible.cfg").write_text("[defaults]\n")
    (root / "callback_plugins").mkdir()
    (root / "callback_plugins" / "vshx_record.py").write_text(RECORDER)
    env = ansible_env(root, tmp_path_factory.mktemp("cp"))
    install_collection(root, env)
    labs = {
        "alpha": make_lab(tmp_path, dirname="alpha"),
        "beta": make_lab(tmp_path, running=False, dirname="beta"),
    }
    try:
        run_on_two_hosts(sshd, labs, root, env, tmp_path)
    finally:
        for lab in labs.values():
            destroy_lab(lab)


def run_on_two_hosts(
    sshd: Sshd, labs: dict[str, Lab], root: Path, env: dict[str, str], tmp: Path
) -> None:
    hosts = inventory(sshd, labs, root, {})
    seen = {name: guest_view(lab, tmp) for name, lab in labs.items()}
    files = {name: file_state(lab.dir) for name, lab in labs.items()}

    # check mode: the plan and its diff on both hosts, nothing changed
    results = playbook(root, env, hosts, PLAYBOOK, "--check", "--diff")
    assert results.status == 0, results.output
    assert "-vda: sn2.qcow2" in results.output  # the default callback shows the diff
    for name, lab in labs.items():
        commit = results[name]["merge sn2 and sn3 into sn1"]
        assert commit["changed"] is True, commit
        assert commit["plan"]["title"].startswith("commit sn3.qcow2 down into sn1.qcow2")
        assert ("blockcommit" if lab.running else "qemu-img commit") in commit["plan"]["script"]
        assert commit["loses"] == ["sn2", "sn3"]
        diff = one(commit["diff"])
        assert "vda: sn2.qcow2\n" in diff["before"] and "vda: sn2.qcow2" not in diff["after"]
        assert "snapshot sn2 on vda: gone" in diff["after"]
        assert "\n# loses: sn2 (" in diff["after"]  # vshx's own line closes the diff
        delete = results[name]["delete snapshot sn2, whose moment the merge lost"]
        assert delete["changed"] is True and delete["loses"] == ["sn2"], delete
        assert "snapshot sn2 on" not in one(delete["diff"])["after"]
        assert file_state(lab.dir) == files[name]
        assert snapshot_names(lab.name) == ["sn1", "sn2", "sn3", "sn4"]

    # the real run: both hosts merge, the guests see the same bytes
    results = playbook(root, env, hosts, PLAYBOOK, "--diff")
    assert results.status == 0, results.output
    for name, lab in labs.items():
        commit = results[name]["merge sn2 and sn3 into sn1"]
        assert commit["changed"] is True and "stdout" in commit, commit
        after = [Path(x["path"]).name for x in commit["chains_after"][0]["layers"]]
        assert after == ["sn4.qcow2", "sn1.qcow2", "base.qcow2"]
        assert results[name]["delete snapshot sn2, whose moment the merge lost"]["changed"]
        chain = results[name]["read the chain"]["chains"][0]["layers"]
        assert [Path(x["path"]).name for x in chain] == after
        assert chain_files(lab.active) == after
        assert "sn2" not in snapshot_names(lab.name)
        assert guest_view(lab, tmp) == seen[name]
        for layer in after:
            qemu_check(lab.layer(layer.removesuffix(".qcow2")))

    # the second run: the end state is reached, nothing to do on either host
    results = playbook(root, env, hosts, PLAYBOOK)
    assert results.status == 0, results.output
    files = {name: file_state(lab.dir) for name, lab in labs.items()}
    for name in labs:
        for task in (
            "merge sn2 and sn3 into sn1",
            "delete snapshot sn2, whose moment the merge lost",
        ):
            assert results[name][task]["changed"] is False, results[name][task]
            assert results[name][task]["msg"].startswith("nothing to do: ")

    # a failing host: beta names a layer its chain does not have; alpha pulls, then flattens
    hosts = inventory(
        sshd, labs, root, {"alpha": {"pull_base": "base.qcow2"}, "beta": {"pull_base": "x.qcow2"}}
    )
    results = playbook(root, env, hosts, PULL)
    assert results.status != 0, results.output
    pulled = results["alpha"]["pull sn1 up into the active layer"]
    assert pulled["changed"] is True and pulled["_"] == "ok", pulled
    flat = results["alpha"]["flatten the disk"]
    assert flat["changed"] is True and len(flat["chains_after"][0]["layers"]) == 1, flat
    again = results["alpha"]["flatten it again"]
    assert again["changed"] is False and again["msg"].startswith("nothing to do: "), again
    assert len(chain_files(labs["alpha"].active)) == 1
    assert guest_view(labs["alpha"], tmp) == seen["alpha"]
    qemu_check(labs["alpha"].active)
    assert "flatten the disk" not in results["beta"]  # a failed host runs no further task
    refused = results["beta"]["pull sn1 up into the active layer"]
    assert refused["_"] == "failed" and "x.qcow2" in refused["msg"], refused
    assert "(hint: " in refused["msg"] and refused["error"] and refused["hint"]
    assert file_state(labs["beta"].dir) == files["beta"]

    # the domains start (beta, shut off) or run (alpha) on the chains vshx reported
    virsh("start", labs["beta"].name)
    labs["beta"].running = True
    assert chain_files(labs["beta"].active) == ["sn4.qcow2", "sn1.qcow2", "base.qcow2"]
    assert guest_view(labs["beta"], tmp) == seen["beta"]
