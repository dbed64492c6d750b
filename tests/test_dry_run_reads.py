"""`--dry-run` is only printing: a passed-through virsh or qemu-img line runs only when it reads.

A fake `virsh` and `qemu-img` on PATH record every run.  Every virsh command name (from
`virsh help` of libvirt 9.0, captured below) goes through `vshx --dry-run`, bare and with a
domain, plus the option forms where options decide; none that is not on the allow-list runs,
and what a read prints goes to stderr, never into the script.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from vshx.shell.readonly import VIRSH_READS, qemu_img_reads, virsh_reads
from vshx.shell.session import Session

VIRSH_HELP_NAMES = """
    attach-device attach-disk attach-interface autostart blkdeviotune blkiotune blockcommit
    blockcopy blockjob blockpull blockresize change-media console cpu-stats create define
    desc destroy detach-device detach-device-alias detach-disk detach-interface domdisplay
    domfsfreeze domfsthaw domfsinfo domfstrim domhostname domid domif-setlink domiftune
    domjobabort domjobinfo domlaunchsecinfo domsetlaunchsecstate domname domrename dompmsuspend
    dompmwakeup domuuid domxml-from-native domxml-to-native dump dumpxml edit get-user-sshkeys
    inject-nmi iothreadinfo iothreadpin iothreadadd iothreadset iothreaddel send-key
    send-process-signal lxc-enter-namespace managedsave managedsave-remove managedsave-edit
    managedsave-dumpxml managedsave-define memtune perf metadata migrate migrate-setmaxdowntime
    migrate-getmaxdowntime migrate-compcache migrate-setspeed migrate-getspeed
    migrate-postcopy numatune qemu-attach qemu-monitor-command qemu-monitor-event
    qemu-agent-command guest-agent-timeout reboot reset restore resume save save-image-define
    save-image-dumpxml save-image-edit schedinfo screenshot set-lifecycle-action
    set-user-sshkeys set-user-password setmaxmem setmem setvcpus shutdown start suspend
    ttyconsole undefine update-device update-memory-device vcpucount vcpuinfo vcpupin
    emulatorpin vncdisplay guestvcpus setvcpu domblkthreshold guestinfo domdirtyrate-calc
    dom-fd-associate domblkerror domblkinfo domblklist domblkstat domcontrol domif-getlink
    domifaddr domiflist domifstat dominfo dommemstat domstate domstats domtime list event
    allocpages capabilities cpu-baseline cpu-compare cpu-models domcapabilities freecell
    freepages hostname hypervisor-cpu-baseline hypervisor-cpu-compare maxvcpus node-memory-tune
    nodecpumap nodecpustats nodeinfo nodememstats nodesevinfo nodesuspend sysinfo uri
    version checkpoint-create checkpoint-create-as checkpoint-delete checkpoint-dumpxml
    checkpoint-edit checkpoint-info checkpoint-list checkpoint-parent iface-begin iface-bridge
    iface-commit iface-define iface-destroy iface-dumpxml iface-edit iface-list iface-mac
    iface-name iface-rollback iface-start iface-unbridge iface-undefine nwfilter-define
    nwfilter-dumpxml nwfilter-edit nwfilter-list nwfilter-undefine nwfilter-binding-create
    nwfilter-binding-delete nwfilter-binding-dumpxml nwfilter-binding-list net-autostart
    net-create net-define net-destroy net-dhcp-leases net-dumpxml net-edit net-event
    net-info net-list net-name net-start net-undefine net-update net-uuid net-port-list
    net-port-create net-port-dumpxml net-port-delete nodedev-create nodedev-destroy
    nodedev-detach nodedev-dumpxml nodedev-list nodedev-reattach nodedev-reset nodedev-event
    nodedev-define nodedev-undefine nodedev-start nodedev-autostart nodedev-info secret-define
    secret-dumpxml secret-event secret-get-value secret-list secret-set-value secret-undefine
    snapshot-create snapshot-create-as snapshot-current snapshot-delete snapshot-dumpxml
    snapshot-edit snapshot-info snapshot-list snapshot-parent snapshot-revert backup-begin
    backup-dumpxml find-storage-pool-sources-as find-storage-pool-sources pool-autostart
    pool-build pool-create-as pool-create pool-define-as pool-define pool-delete pool-destroy
    pool-dumpxml pool-edit pool-info pool-list pool-name pool-refresh pool-start pool-undefine
    pool-uuid pool-event pool-capabilities vol-clone vol-create-as vol-create vol-create-from
    vol-delete vol-download vol-dumpxml vol-info vol-key vol-list vol-name vol-path vol-pool
    vol-resize vol-upload vol-wipe cd echo exit help pwd quit connect
""".split()

# changing commands the issue and the man page name; never on the allow-list
CHANGERS = {
    "domjobabort",
    "dump",
    "domif-setlink",
    "domfsfreeze",
    "domfsthaw",
    "domfstrim",
    "setmaxmem",
    "setmem",
    "setvcpus",
    "setvcpu",
    "iothreadpin",
    "domblkthreshold",
    "guest-agent-timeout",
    "node-memory-tune",
    "allocpages",
    "nodesuspend",
    "screenshot",
    "vol-download",
    "pool-refresh",
    "find-storage-pool-sources",
    "find-storage-pool-sources-as",
    "domdirtyrate-calc",
    "qemu-monitor-command",
    "qemu-agent-command",
    "console",
    "event",
    "migrate-setspeed",
    "migrate-setmaxdowntime",
    "send-key",
    "inject-nmi",
    "cd",
    "echo",
}

# (line, runs): the forms where options decide, reviewed against virsh(1)
FORMS = [
    ("domtime D", True),
    ("domtime D --pretty", True),
    ("domtime D --sync", False),
    ("domtime D --now", False),
    ("domtime D --time 5", False),
    ("domtime D --time=5", False),
    ("domjobinfo D", True),
    ("domjobinfo D --completed --keep-completed", True),
    ("domjobinfo D --completed", False),
    ("schedinfo D --live", True),
    ("schedinfo D --set cpu_shares=5", False),
    ("schedinfo D cpu_shares=5", False),
    ("schedinfo D --weight 5", False),
    ("schedinfo D --cap 5", False),
    ("blkdeviotune D vda --config", True),
    ("blkdeviotune D vda --total-bytes-sec 1", False),
    ("blkdeviotune D vda 100", False),
    ("domiftune D vnet0", True),
    ("domiftune D vnet0 --inbound 1,2,3", False),
    ("vcpupin D", True),
    ("vcpupin D 0", True),
    ("vcpupin D --vcpu 0", True),
    ("vcpupin D 0 1", False),
    ("vcpupin D --vcpu 0 1", False),
    ("vcpupin D --vcpu 0 --cpulist 1", False),
    ("emulatorpin D", True),
    ("emulatorpin D 0-1", False),
    ("iothreadpin D 1 0", False),
    ("numatune D", True),
    ("numatune D --nodeset 0", False),
    ("numatune D --mode strict", False),
    ("memtune D --current", True),
    ("memtune D --hard-limit 1048576", False),
    ("memtune D 1048576", False),
    ("blkiotune D", True),
    ("blkiotune D --weight 100", False),
    ("setmaxmem D 1048576", False),
    ("dommemstat D", True),
    ("dommemstat D --period 5", False),
    ("net-dhcp-leases default", True),
    ("desc D", True),
    ("desc D --title", True),
    ("desc D --new-desc hello", False),
    ("desc D hello", False),
    ("desc D --edit", False),
    ("metadata D http://example.org/", True),
    ("metadata D http://example.org/ --remove", False),
    ("metadata D http://example.org/ k '<a/>'", False),
    ("metadata D --uri http://example.org/ --key k --set '<a/>'", False),
    ("domif-getlink D vnet0", True),
    ("domif-setlink D vnet0 down", False),
    ("domblkerror D", True),
    ("snapshot-current D", True),
    ("snapshot-current D --name", True),
    ("snapshot-current D sn1", False),
    ("snapshot-current D --snapshotname sn1", False),
    ("dump D /tmp/vshx-never --crash", False),
    ("domjobabort D", False),
    ("domfsfreeze D", False),
    ("guestvcpus D", True),
    ("guestvcpus D --enable 1", False),
    ("guestvcpus D 1", False),
    ("perf D", True),
    ("perf D --enable cmt", False),
    ("migrate-compcache D", True),
    ("migrate-compcache D --size 1", False),
    ("dumpxml D --inactive --xpath //disk", True),
    ("dumpxml --domain D", True),
    ("dumpxml D extra", False),
    ("dumpxml D -- --inactive", False),
    ("vol-info --pool default v", True),
    ("cpu-stats D --total 0 1", True),
    ("cpu-stats D 0 1 2", False),
    ("virsh -c test:///default domjobabort D", False),
    ("virsh -c test:///default domstate D", True),
    ("virsh -c qemu:///elsewhere domstate D", False),
]

QEMU_IMG_FORMS = [
    ("qemu-img info -U x.qcow2", True),
    ("qemu-img check x.qcow2", True),
    ("qemu-img check -U -f qcow2 x.qcow2", True),
    ("qemu-img check -r leaks x.qcow2", False),
    ("qemu-img check -r all x.qcow2", False),
    ("qemu-img check --repair=leaks x.qcow2", False),
    ("qemu-img check --repair leaks x.qcow2", False),
    ("qemu-img check -Ur all x.qcow2", False),
    ("qemu-img compare a.qcow2 b.qcow2", True),
    ("qemu-img map --output=json x.qcow2", True),
    ("qemu-img measure -O qcow2 x.qcow2", True),
    ("qemu-img commit x.qcow2", False),
    ("qemu-img rebase -u -b a.qcow2 x.qcow2", False),
    ("qemu-img create -f qcow2 x.qcow2 1M", False),
    ("qemu-img convert -O raw x.qcow2 y.raw", False),
    ("qemu-img resize x.qcow2 2M", False),
    ("qemu-img amend -o compat=1.1 x.qcow2", False),
    ("qemu-img snapshot -c s x.qcow2", False),
    ("qemu-img bitmap --add x.qcow2 b", False),
    ("qemu-img bench -w x.qcow2", False),
    ("qemu-img dd if=x.qcow2 of=y", False),
]

FAKE = """#!/bin/sh
if [ "$1" = help ] && [ $# -eq 1 ]; then cat "$(dirname "$0")/help.txt"; exit 0; fi
printf '%s\\037' "$(basename "$0")" "$@" >> "$(dirname "$0")/record"
printf '\\n' >> "$(dirname "$0")/record"
echo FAKE-OUTPUT-OF-A-READ
"""


def vshx_own_words() -> set[str]:
    session = Session("test:///default")
    return {name for name in VIRSH_HELP_NAMES if session.host.command(name) is not None}


def run_dry(tmp_path: Path, lines: list[str]) -> tuple[subprocess.CompletedProcess[str], list]:
    """Every line through one `vshx --dry-run -f FILE` with the fake programs first on PATH."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "help.txt").write_text("".join(f"    {n}  summary\n" for n in VIRSH_HELP_NAMES))
    for name in ("virsh", "qemu-img"):
        (fake / name).write_text(FAKE)
        (fake / name).chmod(0o755)
    script = tmp_path / "lines.vshx"
    script.write_text("".join(f"- {line}\n" for line in lines))
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    proc = subprocess.run(
        [sys.executable, "-m", "vshx", "-c", "test:///default", "--dry-run", "-f", str(script)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    record = fake / "record"
    runs = []
    if record.exists():
        for entry in record.read_text().splitlines():
            argv = entry.split("\037")[:-1]
            if argv[0] == "virsh" and argv[1:3] == ["-c", "test:///default"]:
                argv = argv[3:]
            runs.append(argv)
    return proc, runs


def as_argv(line: str) -> list[str]:
    words = shlex.split(line)
    if words[:3] == ["virsh", "-c", "test:///default"]:
        return words[3:]
    return words


def test_the_allow_list_names_only_virsh_commands_and_no_changer():
    assert set(VIRSH_READS) <= set(VIRSH_HELP_NAMES)
    assert not CHANGERS & set(VIRSH_READS)


def test_every_virsh_command_under_dry_run_runs_only_when_it_reads(tmp_path: Path):
    own = vshx_own_words()
    names = [n for n in VIRSH_HELP_NAMES if n not in own]
    lines = [form for name in names for form in (name, f"{name} D")]
    lines += [line for line, _runs in FORMS + QEMU_IMG_FORMS]
    proc, runs = run_dry(tmp_path, lines)
    assert "Traceback" not in proc.stderr
    ran = [" ".join(argv) for argv in runs]
    for argv in runs:
        if argv[0] == "qemu-img":
            assert qemu_img_reads(argv[1:]), argv
        else:
            assert argv[0] in VIRSH_READS and argv[0] not in CHANGERS, argv
            assert virsh_reads(argv[0], argv[1:]), argv
    for line, runs_it in FORMS + QEMU_IMG_FORMS:
        assert (" ".join(as_argv(line)) in ran) == runs_it, line
    for name in names:  # a command not on the list never ran, in any form
        if name not in VIRSH_READS:
            assert not any(argv[0] == name for argv in runs), name
    # the script: '#' lines and quoted command lines; a read's output went to stderr
    assert "FAKE-OUTPUT-OF-A-READ" not in proc.stdout
    assert "FAKE-OUTPUT-OF-A-READ" in proc.stderr
    for out in proc.stdout.splitlines():
        assert out.startswith(("#", "virsh -c ", "qemu-img ")), out
    assert "virsh -c test:///default domjobabort D" in proc.stdout


@pytest.mark.parametrize(("line", "runs"), FORMS)
def test_virsh_forms(line: str, runs: bool):
    argv = as_argv(line)
    if line.startswith("virsh -c qemu:///elsewhere"):
        return  # another URI: virsh runs it as printed, never under --dry-run
    assert virsh_reads(argv[0], argv[1:]) == runs


@pytest.mark.parametrize(("line", "runs"), QEMU_IMG_FORMS)
def test_qemu_img_forms(line: str, runs: bool):
    assert qemu_img_reads(shlex.split(line)[1:]) == runs
