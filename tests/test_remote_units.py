"""The remote host's pure parts: the one quoting place, the URI's ssh options, stat lines."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from vshx.errors import VshxError
from vshx.plans.plan import Step, shell_line
from vshx.storage import host
from vshx.storage.remote_command import command_string, quote
from vshx.storage.ssh_host import SshHost, SshTarget, os_error, parse_stat

HOSTILE = [
    "plain",
    "with space",
    "new\nline",
    "$(touch /tmp/vshx-pwned)",
    "`touch /tmp/vshx-pwned`",
    "it's",
    'say "hi"',
    "-rf",
    "--",
    "",
    "back\\slash",
    "semi;colon && amp | pipe > redirect < in",
    "glob * ? [a]",
    "tab\there",
    "~tilde",
    "#hash",
    "{brace,expansion}",
    "'",
    "''",
    "a'\"'b",
    os.fsdecode(b"non-utf8-\xff\xfe"),
    "ünïcode",
]


@pytest.mark.parametrize("word", HOSTILE)
def test_a_quoted_word_is_that_word_for_sh(word: str) -> None:
    """sh splits the quoted word back into exactly the bytes it was (printf shows them)."""
    line = command_string(["printf", "%s\\0", word])
    done = subprocess.run(["sh", "-c", line], capture_output=True, check=True)
    assert done.stdout == os.fsencode(word) + b"\0"


def test_every_hostile_word_at_once_keeps_its_place() -> None:
    line = command_string(["printf", "%s\\0", *HOSTILE])
    done = subprocess.run(["sh", "-c", line], capture_output=True, check=True)
    assert done.stdout.split(b"\0")[:-1] == [os.fsencode(w) for w in HOSTILE]


def test_nothing_runs_from_a_name() -> None:
    marker = "/tmp/vshx-remote-units-pwned"
    if os.path.exists(marker):
        os.unlink(marker)
    names = [f"$(touch {marker})", f"`touch {marker}`", f"x; touch {marker}", f"x\ntouch {marker}"]
    for name in names:
        subprocess.run(["sh", "-c", command_string(["test", "-e", name])], check=False)
    assert not os.path.exists(marker)


def test_safe_words_stay_bare_and_quotes_are_posix() -> None:
    assert quote("/var/lib/libvirt/images/a.qcow2") == "/var/lib/libvirt/images/a.qcow2"
    assert quote("-b") == "-b"
    assert quote("a b") == "'a b'"
    assert quote("it's") == "'it'\\''s'"
    assert quote("") == "''"
    with pytest.raises(ValueError):
        command_string([])


def test_the_printed_ssh_line_runs_the_argv_as_printed() -> None:
    """The printed line is ssh ARGS... 'COMMAND': sh removes one quoting level, ssh's remote
    shell the other; here a local `sh -c` stands in for ssh's remote shell."""
    target = SshTarget("example.org", "root", 2222, "/k e y", no_verify=True)
    ssh = SshHost(target)
    argv = ["printf", "%s\\0", *HOSTILE]
    printed = shell_line(ssh.printed(argv))
    assert printed.startswith(
        "ssh -n -p 2222 -i '/k e y' -o StrictHostKeyChecking=no -o BatchMode=yes root@example.org "
    )
    # what sh hands to ssh as the command word, run by a shell as sshd would
    fake = f'f() {{ shift 10; sh -c "$1"; }}; f {printed[4:]}'
    done = subprocess.run(["sh", "-c", fake], capture_output=True, check=True)
    assert done.stdout.split(b"\0")[:-1] == [os.fsencode(w) for w in HOSTILE]


def test_ssh_options_come_from_the_uri_as_libvirt_reads_them() -> None:
    made = host.for_uri("qemu+ssh://alice@h.example:2200/system?keyfile=/k&no_verify=1&no_tty=1")
    assert isinstance(made, SshHost)
    assert made.target == SshTarget("h.example", "alice", 2200, "/k", True, True)
    assert made.target.options() == [
        "-p", "2200", "-i", "/k", "-o", "StrictHostKeyChecking=no", "-T", "-o", "BatchMode=yes"
    ]  # fmt: skip
    bare = host.for_uri("qemu+ssh://h.example/system")
    assert isinstance(bare, SshHost) and bare.target.options() == ["-o", "BatchMode=yes"]
    assert bare.printed(["qemu-img", "info", "/a b"])[-2:] == ["h.example", "qemu-img info '/a b'"]
    assert host.for_uri("qemu:///system") is host.LOCAL
    assert host.for_uri("test:///default") is host.LOCAL
    assert isinstance(host.for_uri("qemu+tcp://h.example/system"), host.Unreachable)
    with pytest.raises(VshxError, match="ssh option"):
        host.for_uri("qemu+ssh://-oProxyCommand=x/system")


def test_a_remote_step_prints_as_ssh_a_virsh_step_as_itself() -> None:
    try:
        host.select("qemu+ssh://root@h.example:2222/system?keyfile=/key")
        step = Step("commit", ["qemu-img", "commit", "/i m g.qcow2"])
        assert step.equivalent() == (
            "ssh -n -p 2222 -i /key -o BatchMode=yes root@h.example "
            "'qemu-img commit '\"'\"'/i m g.qcow2'\"'\"''"
        )
        virsh = Step("define", ["virsh", "-c", "qemu+ssh://h/system", "start", "d"])
        assert virsh.equivalent() == "virsh -c qemu+ssh://h/system start d"
        journal = Step("clear", ["rm", "-f", "--", "/home/u/j.json"], here=True)
        assert journal.equivalent() == "rm -f -- /home/u/j.json"  # vshx's own file: here
        check = Step("room", ["df", "/x"], action=lambda: None, shell="df /x | awk 1")
        assert check.equivalent().endswith("root@h.example 'df /x | awk 1'")
    finally:
        host.select("qemu:///system")


def test_a_stat_line_is_an_os_stat_result() -> None:
    line = "81a4 65024 1196046 2 0 0 1326 8 1796169085.580542361 1796169085.576122095 17.5 0 0"
    result = parse_stat(line)
    assert stat.S_ISREG(result.st_mode) and result.st_mode & 0o777 == 0o644
    assert (result.st_dev, result.st_ino, result.st_nlink) == (65024, 1196046, 2)
    assert result.st_size == 1326 and result.st_blocks == 8
    assert result.st_mtime_ns == 1796169085576122095
    device = parse_stat("61b0 6 3 1 0 6 0 0 1.0 1.0 1.0 fd 1")
    assert stat.S_ISBLK(device.st_mode) and device.st_rdev == os.makedev(0xFD, 1)


def test_coreutils_errors_become_the_os_errors() -> None:
    missing = os_error("stat: cannot statx '/x': No such file or directory", "/x")
    assert isinstance(missing, FileNotFoundError) and missing.filename == "/x"
    assert isinstance(os_error("head: cannot open 'x': Permission denied", "x"), PermissionError)
    assert os_error("something else", "x").errno == 5  # EIO: unknown is an error, not absence


def test_a_practice_lab_is_not_made_on_a_remote_host() -> None:
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "vshx", "-c", "qemu+ssh://nowhere.invalid/system", "lab-create",
         "vshx-remote-unit-lab"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "practice labs are made on this machine" in done.stderr


def test_a_remote_plan_says_where_its_file_steps_run() -> None:
    from vshx.plans.plan import Plan

    try:
        host.select("qemu+ssh://root@h.example:2222/system")
        plan = Plan("t", method="offline")
        plan.add(Step("x", ["qemu-img", "info", "/a"]))
        assert "# the image files are on root@h.example:2222" in plan.script()
        host.select("qemu:///system")
        assert "image files are on" not in plan.script()
    finally:
        host.select("qemu:///system")


def test_a_refused_ssh_host_is_an_error_not_a_traceback() -> None:
    """An ssh host that would read as an option is refused before anything runs: exit 1 with
    error and hint, no traceback."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "vshx", "-c", "qemu+ssh://-oProxyCommand=x/system", "list"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: refusing the ssh host") and "hint:" in done.stderr
    assert "Traceback" not in done.stderr
