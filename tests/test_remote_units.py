"""The remote host's pure parts: the one quoting place, the URI's ssh options, stat lines."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import time

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


def test_a_remote_lab_directory_is_an_absolute_path_on_that_host() -> None:
    """This machine's working directory means nothing on the remote host, nor does this
    user's home for a session daemon there: usage errors, before anything is asked."""
    import sys

    for uri, words, said in (
        ("qemu+ssh://nowhere.invalid/system", ["--dir", "rel"], "--dir rel is relative"),
        ("qemu+ssh://nowhere.invalid/session", [], "no default lab directory"),
    ):
        for command in ("lab-create", "lab-destroy"):
            done = subprocess.run(
                [sys.executable, "-m", "vshx", "-c", uri, command, "vshx-remote-unit-lab",
                 *words],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert done.returncode == 2 and said in done.stderr, done.stderr
            assert "hint:" in done.stderr and "Traceback" not in done.stderr


def test_a_lesson_is_not_run_on_a_remote_host() -> None:
    """A lesson reads its lab's images on this machine: refused on a remote URI, with why."""
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "vshx", "-c", "qemu+ssh://nowhere.invalid/system", "lesson",
         "start", "commit-middle"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "lessons read their lab's images" in done.stderr
    assert "hint:" in done.stderr and "Traceback" not in done.stderr


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
    user = "qemu+ssh://-oProxyCommand=x@localhost/system"  # the user, not the host, is named
    done = subprocess.run(
        [sys.executable, "-m", "vshx", "-c", user, "list"], capture_output=True, text=True
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: refusing the ssh user '-oProxyCommand=x'"), done.stderr


@pytest.mark.parametrize(
    "uri",
    [
        "qemu+ssh://root@localhost:99999/system",
        "qemu+ssh://root@localhost:abc/system",
        "qemu+ssh://[::1/system",
    ],
)
def test_a_uri_python_cannot_split_is_an_error_not_a_traceback(uri: str) -> None:
    """A port out of range, not a number, an unclosed IPv6 bracket: error + hint, exit 1, from
    -c and from LIBVIRT_DEFAULT_URI alike (an outside attack met a ValueError traceback)."""
    import subprocess
    import sys

    with pytest.raises(VshxError, match="cannot read the URI"):
        host.for_uri(uri)
    for argv, env in (
        (["-c", uri, "list"], {}),
        (["list"], {"LIBVIRT_DEFAULT_URI": uri}),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "vshx", *argv],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
        )
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith("error: cannot read the URI") and "hint:" in done.stderr
        assert "Traceback" not in done.stderr


def test_libvirts_ssh_parameters_change_vshx_ssh_as_they_change_libvirts() -> None:
    """command= names the ssh program (printed too); the libssh transports' known_hosts and
    known_hosts_verify become ssh options; what only says how libvirt reaches libvirtd
    (socket, netcat, mode, proxy, name) changes nothing for vshx's file commands."""
    made = host.for_uri(
        "qemu+ssh://u@h:22/system?command=/opt/ssh%20x/ssh&socket=/run/x.sock&netcat=nc"
        "&mode=legacy&proxy=netcat&name=qemu:///system&no_tty=1"
    )
    assert isinstance(made, SshHost)
    assert made.printed(["true"]) == [
        "/opt/ssh x/ssh", "-n", "-p", "22", "-T", "-o", "BatchMode=yes", "u@h", "true"
    ]  # fmt: skip
    assert made.runnable(["true"])[0] == "/opt/ssh x/ssh"
    made.close()
    # libvirt reads known_hosts* and sshauth only for libssh(2), no_tty and command only for ssh
    plain = host.for_uri("qemu+ssh://h/system?known_hosts=/k&known_hosts_verify=ignore")
    assert isinstance(plain, SshHost) and plain.target.options() == ["-o", "BatchMode=yes"]
    learn = host.for_uri("qemu+libssh2://h/system?known_hosts=/kh&known_hosts_verify=auto")
    assert isinstance(learn, SshHost)
    assert learn.target.options() == [
        "-o", "UserKnownHostsFile=/kh", "-o", "StrictHostKeyChecking=accept-new",
        "-o", "BatchMode=yes",
    ]  # fmt: skip
    blind = host.for_uri("qemu+libssh2://h/system?known_hosts_verify=ignore")
    assert isinstance(blind, SshHost) and "StrictHostKeyChecking=no" in blind.target.options()
    with pytest.raises(VshxError, match="no ssh program"):
        host.for_uri("qemu+ssh://h/system?command=-oProxyCommand=x")


def test_a_libssh2_uri_reaches_the_files_with_ssh_as_the_same_user_host_port_and_key() -> None:
    """The decision for qemu+libssh2://: OpenSSH's ssh with the URI's user, host, port and
    keyfile (libssh2 logs in with the same keys and agent); its printed lines are the plain
    ssh lines of the qemu+ssh:// URI."""
    made = host.for_uri("qemu+libssh2://bob@h.example:2022/system?keyfile=/k&sshauth=privkey")
    same = host.for_uri("qemu+ssh://bob@h.example:2022/system?keyfile=/k")
    assert isinstance(made, SshHost) and isinstance(same, SshHost)
    assert made.target == same.target
    assert made.printed(["qemu-img", "info", "/a"]) == same.printed(["qemu-img", "info", "/a"])
    assert made.printed(["true"])[0] == "ssh" and made.name == "bob@h.example:2022"


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("sshauth=password", "allows only passwords"),
        ("sshauth=keyboard-interactive,password", "allows only passwords"),
        ("sshauth=telepathy", "which libvirt does not know"),
        ("known_hosts_verify=maybe", "none of libvirt's values"),
    ],
)
def test_what_batch_ssh_cannot_do_is_refused_with_the_reason_on_the_first_file_question(
    query: str, said: str
) -> None:
    """Not ignored, not a failed login later: every file question (an offline step's
    preflight, a read) stops with error + hint; live commands, libvirt's only, still work."""
    from vshx.merging.preflight import refuse_remote_offline

    made = host.for_uri(f"qemu+libssh2://h.example/system?{query}")
    assert isinstance(made, host.Unreachable)
    with pytest.raises(VshxError, match=said) as raised:
        made.stat("/x")
    assert raised.value.hint
    assert isinstance(host.for_uri("qemu+libssh2://h/system?sshauth=agent,password"), SshHost)

    class Remote:
        is_local = False
        uri = "qemu+libssh2://h.example/system"

    class Offline:
        live = False

    try:
        host.select(f"qemu+libssh2://h.example/system?{query}")
        with pytest.raises(VshxError, match=said) as refused:
            refuse_remote_offline(Remote(), Offline(), planning_only=False)  # type: ignore[arg-type]
        assert refused.value.message.startswith("offline steps run qemu-img where the images")
        assert refused.value.hint
    finally:
        host.select("qemu:///system")


PS_OUTPUT = (
    b"1796000000\x00100\x00"
    # a qemu-img commit started 12.5 s after boot, in /img, a relative name, started by vshx
    b"4242\x004242 (qemu-img) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 1250 1 1"
    b"\x00" + base64.b64encode(b"qemu-img\x00commit\x00-q\x00top.qcow2\x00") + b"\x00/img\x00"
    b"77\x00"
    # comm says qemu-img, argv[0] says otherwise: not one (as /proc/PID/cmdline locally)
    b"4343\x004343 (qemu-img) R 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 1 1\x00"
    + base64.b64encode(b"python3\x00x\x00")
    + b"\x00/\x00\x00"
    # a name with ") " inside the parentheses, a zombie
    b"4444\x004444 (qemu-io ) Z) Z 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 300 1 1\x00"
    + base64.b64encode(b"/usr/bin/qemu-io\x00-c\x00write 0 1\x00/abs.qcow2\x00")
    + b"\x00\x00\x00"
)


def test_the_remote_proc_listing_is_read_as_the_local_one() -> None:
    from vshx.storage import remote_procs

    seen = remote_procs.parse_ps(PS_OUTPUT)
    assert [s.pid for s in seen] == [4242, 4444]
    commit, zombie = seen
    assert commit.started == 1796000000 + 12.5 and commit.parent == 77
    assert commit.argv == ["qemu-img", "commit", "-q", "top.qcow2"]
    assert remote_procs.named_paths(commit) == ["/img/commit", "/img/top.qcow2"]
    assert zombie.state == "Z" and zombie.parent is None
    assert remote_procs.named_paths(zombie) == ["/abs.qcow2"]  # no cwd read: absolute only
    assert remote_procs.parse_alive(b"1796000000\x00100\x00") is None
    stat_line = b"4242 (qemu-img) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 1250 1 1"
    assert remote_procs.parse_alive(b"1796000000\x00100\x00" + stat_line + b"\x00") == (
        1796000000 + 12.5,
        "S",
    )
    with pytest.raises(ValueError):
        remote_procs.parse_ps(b"sh: 1: cannot open /proc/stat\x00")


def test_the_proc_scripts_find_a_running_qemu_img_by_pid_and_start_time(tmp_path) -> None:
    """The scripts a remote host runs, run here by sh: they find a slow qemu-img commit named
    by a relative path as vshx.storage.procs finds it, and a recorded start time that is
    not this process's (a reused pid) is not it."""
    from vshx.storage import procs, remote_procs

    base, top = tmp_path / "base.qcow2", tmp_path / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(top)],
        check=True,
    )
    subprocess.run(["qemu-io", "-c", "write -P 0x22 0 4M", str(top)], check=True, stdout=-3)
    slow = subprocess.Popen(
        ["qemu-img", "commit", "-q", "-r", "65536", "top.qcow2"],
        cwd=tmp_path,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            out = subprocess.run(["sh", "-c", remote_procs.PS, "sh"], capture_output=True).stdout
            seen = [s for s in remote_procs.parse_ps(out) if s.pid == slow.pid]
            if seen and seen[0].argv[:2] == ["qemu-img", "commit"]:
                break
            time.sleep(0.05)
        (found,) = seen
        assert str(top) in remote_procs.named_paths(found)
        (local,) = procs.at_work_on([str(top)])
        assert (local.pid, local.argv, local.started) == (found.pid, found.argv, found.started)

        def alive(pid: int) -> tuple[float, str] | None:
            argv = ["sh", "-c", remote_procs.ALIVE, "sh", str(pid)]
            return remote_procs.parse_alive(subprocess.run(argv, capture_output=True).stdout)

        now = alive(slow.pid)
        assert now is not None and now[0] == found.started and now[1] != "Z"
        assert now[0] != found.started + 0.01  # what a reused pid shows: another start
    finally:
        slow.kill()
        slow.wait()
    assert alive(slow.pid) is None


def test_a_journal_is_running_only_for_its_own_process_on_its_own_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pid in a journal means that process only on the machine and in the boot that
    wrote it, and only with the start time it recorded; another machine's vshx cannot be
    seen from here, so it counts as running unless this vshx holds the chain's lock."""
    from vshx.plans import journal, lock
    from vshx.storage import procs

    me = procs.this_machine()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        started = procs.started_at(sleeper.pid)
        assert started is not None
        mine = {"pid": str(sleeper.pid), "machine": me[0], "boot": me[1], "image": "/i"}
        assert journal.Entry(mine, started=f"{started:.2f}").still_running()
        assert not journal.Entry(mine, started=f"{started + 1:.2f}").still_running()  # reused
        assert not journal.Entry(mine, boot="another boot").still_running()  # restarted since
        elsewhere = journal.Entry(mine, machine="another machine", node="kvm7", plan="commit")
        assert elsewhere.elsewhere() == "kvm7" and elsewhere.still_running()
        assert "a vshx on kvm7 (pid" in elsewhere.describe()
        monkeypatch.setattr(lock, "holds", lambda image: image == "/i")
        assert not elsewhere.still_running()  # its lock is ours now: it is not at work
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not journal.Entry(mine, started=f"{started:.2f}").still_running()


def test_a_libssh_uri_is_refused_before_anything_runs_with_the_way_that_works() -> None:
    """The decision for qemu+libssh://: refused at start (libvirt 9.0's libssh client crashed
    or hung vshx here), exit 1, error + hint naming qemu+ssh:// and qemu+libssh2://."""
    import sys

    with pytest.raises(VshxError, match="libssh transport") as raised:
        host.for_uri("qemu+libssh://root@h.example/system")
    assert "qemu+ssh://" in str(raised.value.hint) and "qemu+libssh2://" in str(raised.value.hint)
    done = subprocess.run(
        [sys.executable, "-m", "vshx", "-c", "qemu+libssh://root@127.0.0.1/system", "list"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: vshx does not use libvirt's libssh transport")
    assert "\nhint: use qemu+ssh:// or qemu+libssh2://" in done.stderr
    assert "Traceback" not in done.stderr


def test_letting_go_of_a_remote_lock_ends_its_shell_and_file_before_returning(tmp_path) -> None:
    """The holder shell (ssh_host.LOCK, run here without ssh) sees its stdin end, removes the
    file and exits by itself: nothing is killed, and the file is gone when vshx goes on (it
    once killed the ssh client, and the remote file went a moment later, on SIGHUP)."""
    from vshx.plans.lock import _let_go_remote
    from vshx.storage.ssh_host import LOCK

    path = tmp_path / ".vshx-1-2.lock"
    argv = ["sh", "-c", LOCK, "sh", str(path), '"u"', '"c"', "0"]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith(b"locked")
    assert path.exists()
    _let_go_remote(proc)
    assert proc.returncode == 0 and not path.exists()
