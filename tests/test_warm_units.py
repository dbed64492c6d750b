"""The warm server (`vshx --warm start`) without libvirtd: which command lines go to it, the
directory its socket lives in, and that a command it runs says and ends exactly as the same
command run alone (streams, exit status, hostile bytes, working directory, umask); that it
answers only its own user, stops when its code changes on disk and when idle."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vshx.frontends import warm_client

VSHX = [sys.executable, "-m", "vshx"]


@pytest.mark.parametrize(
    ("words", "warm"),
    [
        (["list"], True),
        (["-c", "qemu:///system", "commit", "d", "vda"], True),
        (["--connect=qemu:///system", "-q", "--teach", "commit"], True),
        (["--record", "t.txt", "help"], True),
        (["--dry-run", "domstate D; list"], True),
        ([], False),  # the interactive shell
        (["-q"], False),
        (["-f", "script"], False),
        (["--file=script"], False),
        (["--tour"], False),
        (["--tour=lab"], False),
        (["--version"], False),
        (["--help"], False),
        (["complete", "--", "vshx co"], False),
        (["-c", "x", "complete", "--", "vshx co"], False),
        (["--warm", "status"], False),
        (["--bogus", "list"], False),  # a usage error: said here
    ],
)
def test_which_command_lines_go_warm(
    words: list[str], warm: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VSHX_WARM")  # conftest keeps every other test's commands here
    assert warm_client.wants_warm(words) is warm


def test_vshx_warm_off_keeps_every_command_here(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("off", "0", "no", "OFF", "false", "False"):
        monkeypatch.setenv("VSHX_WARM", value)
        assert not warm_client.wants_warm(["list"])


def test_the_socket_directory_must_be_private_and_the_users_own(tmp_path: Path) -> None:
    mine = tmp_path / "d"
    mine.mkdir(mode=0o700)
    assert warm_client.private_directory(str(mine))
    mine.chmod(0o755)
    assert not warm_client.private_directory(str(mine))
    mine.chmod(0o700)
    link = tmp_path / "l"
    link.symlink_to(mine)
    assert not warm_client.private_directory(str(link))
    assert not warm_client.private_directory(str(tmp_path / "missing"))
    afile = tmp_path / "f"
    afile.write_text("")
    afile.chmod(0o700)
    assert not warm_client.private_directory(str(afile))


def test_the_socket_name_is_this_install_and_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    one = warm_client.socket_path("/run/x")
    assert one == warm_client.socket_path("/run/x")
    assert one.startswith("/run/x/warm-") and one != warm_client.socket_path("/run/y")
    monkeypatch.setattr(sys, "prefix", "/another/venv")
    assert warm_client.socket_path("/run/x") != one


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A runtime directory of this test's own (short: a socket path holds 107 bytes), and no
    VSHX_WARM=off (conftest sets it for every other test)."""
    base = Path(tempfile.mkdtemp(prefix="vw-", dir="/tmp"))
    base.chmod(0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    monkeypatch.delenv("VSHX_WARM", raising=False)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def vshx(*args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    """vshx as a script runs it: in a session of its own, with no controlling terminal (a
    client with one runs its command itself), whatever terminal pytest was started from."""
    kw.setdefault("start_new_session", True)
    return subprocess.run([*VSHX, *args], capture_output=True, check=False, **kw)  # type: ignore[call-overload,no-any-return]


def served() -> int | None:
    """How many commands the server has run; None when none answers."""
    proc = vshx("--warm", "status")
    if proc.returncode != 0:
        return None
    said = proc.stdout.decode()
    return int(said.split(" command", 1)[0].rsplit(", ", 1)[1])


@pytest.fixture
def warm(runtime: Path) -> Iterator[Path]:
    started = vshx("--warm", "start", "--idle", "5")
    assert started.returncode == 0, started.stderr
    assert b"warm vshx server started" in started.stdout
    yield runtime
    vshx("--warm", "stop")


def cold(
    *args: str, env: dict[str, str] | None = None, **kw: object
) -> subprocess.CompletedProcess[bytes]:
    """The same command in a process of its own."""
    return vshx(*args, env={**(env or os.environ), "VSHX_WARM": "off"}, **kw)


HOSTILE = "d\n$(touch PWN)\xff'\"; rm -rf ~".encode("utf-8", "surrogateescape").decode(
    "utf-8", "surrogateescape"
)


@pytest.mark.parametrize(
    "args",
    [
        ("help",),
        ("help", "commit"),
        ("commit",),  # a usage error: exit 2, error and hint on stderr
        ("help", "no-such-command"),
        ("-q", "help", os.fsdecode(b"bad\xff\nname")),
        ("help", HOSTILE),
    ],
    ids=["help", "help-commit", "usage", "unknown", "bytes", "hostile"],
)
def test_a_command_run_warm_says_and_ends_as_it_does_alone(
    warm: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    before = served()
    here = cold(*args, cwd=tmp_path)
    there = vshx(*args, cwd=tmp_path)
    assert served() == (before or 0) + 1  # it did go to the server
    assert (there.returncode, there.stdout, there.stderr) == (
        here.returncode,
        here.stdout,
        here.stderr,
    )
    assert not list(tmp_path.iterdir())  # nothing made (PWN) by either


def test_the_working_directory_and_umask_are_the_clients(warm: Path, tmp_path: Path) -> None:
    """`--record rec.txt` writes where the client stands, with the client's umask."""
    for where, runner in (("cold", cold), ("warm", vshx)):
        (tmp_path / where).mkdir()
        proc = runner(
            "--record", "rec.txt", "help", "commit", cwd=tmp_path / where,
            preexec_fn=lambda: os.umask(0o027),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    made = [tmp_path / w / "rec.txt" for w in ("cold", "warm")]
    assert all(p.is_file() for p in made)
    assert made[0].stat().st_mode == made[1].stat().st_mode
    assert (made[1].stat().st_mode & 0o777) & 0o027 == 0


def test_the_environment_is_the_clients(warm: Path, tmp_path: Path) -> None:
    """A variable the server was started without reaches the command (VSHX_DISABLE_PLUGINS:
    `commit` is then a command vshx does not know)."""
    env = {**os.environ, "VSHX_DISABLE_PLUGINS": "commit"}
    before = served()
    there = vshx("help", "commit", env=env)
    here = cold("help", "commit", env=env)
    assert served() == (before or 0) + 1
    assert (there.returncode, there.stdout, there.stderr) == (
        here.returncode,
        here.stdout,
        here.stderr,
    )


def test_another_pythonpath_runs_the_command_here(warm: Path, tmp_path: Path) -> None:
    """What a Python process imports is set when it starts: a client under another
    PYTHONPATH (a plugin being written) runs its command itself."""
    before = served()
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    there = vshx("help", "commit", env=env)
    assert there.returncode == 0, there.stderr
    assert served() == before
    assert there.stdout == cold("help", "commit").stdout
    assert vshx("--warm", "status", env=env).returncode == 0  # status is said all the same


@pytest.mark.serial  # it touches a vshx module: every other warm server would end too
def test_a_changed_file_sends_commands_home_and_ends_the_server(warm: Path) -> None:
    """Code on disk newer than the server's (an upgrade, an edited checkout): the command
    runs in its own process, and the server ends."""
    module = Path(warm_client.__file__)
    seen = module.stat()
    try:
        os.utime(module, ns=(seen.st_atime_ns, seen.st_mtime_ns + 1_000_000_000))
        proc = vshx("help")
        assert proc.returncode == 0, proc.stderr
    finally:
        os.utime(module, ns=(seen.st_atime_ns, seen.st_mtime_ns))
    for _ in range(100):
        if served() is None:
            break
        time.sleep(0.1)
    assert served() is None


def test_an_idle_server_ends_itself(runtime: Path) -> None:
    started = vshx("--warm", "start", "--idle", "0.01")
    assert started.returncode == 0, started.stderr
    for _ in range(150):
        if served() is None:
            break
        time.sleep(0.1)
    assert served() is None
    left = [p.name for p in (runtime / "vshx").iterdir()]
    assert not [name for name in left if not name.endswith(".lock")], left  # socket removed


def test_start_twice_and_stop_without_a_server(runtime: Path) -> None:
    assert vshx("--warm", "stop").returncode == 0  # none: nothing to do
    assert vshx("--warm", "start").returncode == 0
    again = vshx("--warm", "start", "--idle", "2")
    assert again.returncode == 0 and b"already runs" in again.stdout
    assert b"its idle time stays" in again.stdout
    said = vshx("--warm", "status").stdout
    assert b"0 commands run, 0 running, ends after 60 idle minutes" in said, said
    stopped = vshx("--warm", "stop")
    assert stopped.returncode == 0 and b"stopped" in stopped.stdout
    assert served() is None


@pytest.mark.parametrize(
    "words",
    [["--warm"], ["--warm", "restart"], ["--warm", "start", "--idle"],
     ["--warm", "start", "--idle", "-1"], ["--warm", "start", "--idle", "x"],
     ["--warm", "stop", "now"], ["--warm", "status", "--idle", "5"]],
)  # fmt: skip
def test_warm_usage_errors(runtime: Path, words: list[str]) -> None:
    proc = vshx(*words)
    assert proc.returncode == 2
    assert proc.stderr.startswith(b"error: ") and b"\nhint: " in proc.stderr


def test_a_socket_directory_of_someone_else_is_not_used(runtime: Path) -> None:
    """A loose directory where the socket would go: start refuses, commands run here."""
    (runtime / "vshx").mkdir(mode=0o755)
    (runtime / "vshx").chmod(0o755)
    proc = vshx("--warm", "start")
    assert proc.returncode == 1 and b"not a private directory" in proc.stderr
    assert vshx("help").returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another user")
def test_only_its_own_user_is_answered(warm: Path) -> None:
    """Another user that reaches the socket (its directory opened up for this test) gets no
    answer and nothing runs."""
    directory = warm / "vshx"
    socket_file = Path(warm_client.socket_path(str(directory)))
    before = served()  # (the client asks only a server in a private directory)
    warm.chmod(0o755)
    directory.chmod(0o755)
    socket_file.chmod(0o777)
    probe = (
        "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
        "print(repr(s.recv(16)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(socket_file)],
        capture_output=True, text=True, user=65534, group=65534, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "b''"
    directory.chmod(0o700)
    assert served() == before


def server_pid() -> int:
    proc = vshx("--warm", "status")
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.decode().split("pid ", 1)[1].split(",", 1)[0])


def test_idle_connections_hold_up_no_command(warm: Path) -> None:
    """atk18 #2: clients that connect and send nothing (stuck, stopped, hostile) are read as
    far as they came, never waited for: a command meanwhile is served."""
    socket_file = Path(warm_client.socket_path(str(warm / "vshx")))
    import socket

    idle = [socket.socket(socket.AF_UNIX) for _ in range(20)]
    try:
        for sock in idle:
            sock.connect(str(socket_file))
        before = served()
        proc = vshx("help", timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert served() == (before or 0) + 1
    finally:
        for sock in idle:
            sock.close()


def test_the_time_zone_and_a_full_disk_are_the_clients(warm: Path, tmp_path: Path) -> None:
    """atk18 #5, #6: the client's TZ (a transcript's times), and output that cannot be
    written ends with an error, not a traceback, warm as alone."""
    env = {**os.environ, "TZ": "UTC-9"}
    for where, runner in (("cold", cold), ("warm", vshx)):
        record = tmp_path / f"{where}.txt"
        proc = runner("--record", str(record), "help", "commit", env=env)
        assert proc.returncode == 0, proc.stderr
        assert "+0900" in record.read_text(), record.read_text()

    def to_full(env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
        with open("/dev/full", "wb") as full:
            return subprocess.run(
                [*VSHX, "help"], stdout=full, stderr=subprocess.PIPE, env=env, check=False,
                start_new_session=True,
            )  # fmt: skip

    here = to_full({**os.environ, "VSHX_WARM": "off"})
    before = served()
    there = to_full(dict(os.environ))
    assert served() == (before or 0) + 1
    assert (there.returncode, there.stderr) == (here.returncode, here.stderr)
    assert here.returncode == 1 and here.stderr.startswith(b"error: "), here.stderr
    assert b"\nhint: " in here.stderr and b"Traceback" not in here.stderr


def test_starts_at_once_leave_one_server_and_say_so(runtime: Path) -> None:
    """atk18 #8: of starts racing, one serves; the others say it already runs."""
    starts = [
        subprocess.Popen(
            [*VSHX, "--warm", "start"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        for _ in range(4)
    ]
    said = [p.communicate(timeout=60) for p in starts]
    assert all(p.returncode == 0 for p in starts), said
    pid = server_pid()
    for out, _err in said:
        assert f"pid {pid}," in out.decode(), said
    assert sum(b"started" in out for out, _err in said) == 1, said
    vshx("--warm", "stop")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for unshare and setpriv")
@pytest.mark.parametrize(
    "prefix",
    [["unshare", "-m", "--propagation", "private"],
     ["setpriv", "--no-new-privs"],
     ["setpriv", "--bounding-set=-dac_override"]],
    ids=["mount-namespace", "no-new-privs", "fewer-capabilities"],
)  # fmt: skip
def test_a_client_with_another_standing_runs_its_command_itself(
    warm: Path, prefix: list[str]
) -> None:
    """atk18 #1: a process of the same user with another mount namespace, no_new_privs or
    fewer capabilities would have run with the server's: its command runs in itself."""
    before = served()
    proc = subprocess.run(
        [*prefix, *VSHX, "help"], capture_output=True, check=False, start_new_session=True
    )
    assert proc.returncode == 0, proc.stderr
    assert served() == before


def test_a_stopped_server_is_said_so_and_stop_still_ends_it(warm: Path) -> None:
    """nu16 #3: a server stopped with SIGSTOP holds its socket without answering: status says
    so (error, hint, exit 1), a command runs without it, and --warm stop ends it."""
    import signal

    pid = server_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        said = vshx("--warm", "status")
        assert said.returncode == 1, said
        assert f"(pid {pid}) holds".encode() in said.stderr and b"\nhint: kill -CONT" in said.stderr
        assert vshx("help", timeout=60).returncode == 0  # after the handshake's 5 s, here
        stopped = vshx("--warm", "stop", timeout=60)
        assert stopped.returncode == 0 and b"stopped" in stopped.stdout, stopped
    finally:
        with contextlib.suppress(ProcessLookupError):  # ended by the stop
            os.kill(pid, signal.SIGCONT)
    assert served() is None


def test_a_client_with_a_terminal_runs_its_command_itself(warm: Path) -> None:
    """atk19 #3: a fork has no controlling terminal, so what opens /dev/tty (an ssh password
    prompt, an editor) would fail there: a client that has one runs the command itself; its
    status query is answered all the same."""
    before = served()
    typed = subprocess.run(
        ["script", "-qec", shlex.join([*VSHX, "help", "commit"]), "/dev/null"],
        capture_output=True, check=False, start_new_session=True,
    )  # fmt: skip
    assert typed.returncode == 0, typed.stderr
    assert b"commit" in typed.stdout
    assert served() == before
    status = subprocess.run(
        ["script", "-qec", shlex.join([*VSHX, "--warm", "status"]), "/dev/null"],
        capture_output=True, check=False, start_new_session=True,
    )  # fmt: skip
    assert b"warm vshx server: pid" in status.stdout, status


def test_a_jailed_client_runs_its_command_itself(warm: Path, tmp_path: Path) -> None:
    """atk19 #1: a process of the user in a chroot that reaches the socket would have had its
    command run outside the jail: another root is another standing."""
    if os.geteuid() != 0:
        pytest.skip("needs root for chroot")
    probe = f"""
import os, socket, sys
os.chdir({str(warm / "vshx")!r})
os.chroot({str(tmp_path)!r})
s = socket.socket(socket.AF_UNIX)
s.connect({os.path.basename(warm_client.socket_path(str(warm / "vshx")))!r})
print(repr(s.recv(16)))
"""
    before = served()
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "b''"  # closed: not answered
    assert served() == before
