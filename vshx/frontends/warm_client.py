"""The warm client: a one-shot command handed to a warm vshx server, when one runs.

``vshx --warm start`` leaves a server process of the user's own that has imported vshx,
its built-in plugins and libvirt-python once (frontends/warm_server.py).  A one-shot command
(``vshx commit DOM vda ...``) then does not import them again: this client hands the server
its command line, environment, working directory, umask and its standard input, output and
error themselves (the descriptors, over a Unix socket), and the server forks a process that
runs the command exactly as ``vshx`` would, writing straight to this process's terminal or
pipes.  The client forwards SIGINT, SIGTERM and SIGHUP to it, ends when it ends, with its
status (or its signal), and when the client is killed (``kill -9``) the forked process kills
itself at once, as the in-process command would have died.

Nothing changes for a user who never starts a server: one ``stat`` of the socket's path,
then the command runs in this process as before.  A process with a controlling terminal runs
its command itself too: a fork of the server has none, so what opens ``/dev/tty`` (an ssh
password prompt, an editor, polkit's agent) would fail there; the server serves scripts, cron
jobs, systemd units, ssh commands and Ansible, where one-shots come many at a time.  The
client also runs the command itself when the server does not answer within 5 s, is not the
user's own (its peer credentials), says its code is older than the files on disk (an
upgrade: it then ends itself), or finds the client standing elsewhere (warm_peer.py) or
under other ``PYTHON*`` variables (another ``PYTHONPATH`` finds other plugins).  Only one-shot
commands go warm: the interactive shell, ``-f`` scripts, ``--tour`` and shell completion run
here (they need this process's terminal, or are fast already).  ``VSHX_WARM=off`` (or 0, no,
false) runs every command here.

Imports only what the interpreter has built in (``_socket`` is lib-dynload: loaded only when
a socket exists); no ``typing``, no ``socket`` (its enums cost ~3 ms).
"""

from __future__ import annotations

import marshal
import os
import sys

from vshx.spec.global_options import FLAGS, TAKES_VALUE

TYPE_CHECKING = False  # typing itself is not imported here: see the docstring
if TYPE_CHECKING:
    from collections.abc import Sequence

PROTOCOL = 1
OFF = ("off", "0", "no", "false")  # VSHX_WARM values that keep every command in its process
HANDSHAKE_SECONDS = 5.0  # a server that does not take the command by then: run it here
SOCKET_PREFIX = "warm-"
FORWARDED = (2, 15, 1)  # SIGINT, SIGTERM, SIGHUP (stable Linux numbers: no `signal` import)
# global options after which the command is not a one-shot (or needs this process)
LOCAL_OPTIONS = frozenset({"-f", "--file", "--tour", "-h", "--help", "--version", "--warm"})


def wants_warm(words: Sequence[str]) -> bool:
    """Whether ``vshx WORDS`` is a one-shot command a warm server may run: a command word
    after the global options, and none of the options that need this process."""
    if os.environ.get("VSHX_WARM", "").lower() in OFF:
        return False
    i = 0
    while i < len(words):
        word = words[i]
        name = word.partition("=")[0]
        if name in LOCAL_OPTIONS:
            return False
        if word in TAKES_VALUE:
            i += 2
            continue
        if word in FLAGS or (name in TAKES_VALUE and "=" in word and word.startswith("--")):
            i += 1
            continue
        return not word.startswith("-") and word != "complete"
    return False


def _fnv(data: bytes) -> int:
    """FNV-1a, 32 bits: a stable short tag (no hashlib or zlib to import)."""
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def socket_directory() -> str:
    """Where this user's warm servers listen: ``$XDG_RUNTIME_DIR/vshx``, else
    ``/tmp/vshx-UID`` (as Emacs' server does); the directory is checked before use."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime.startswith("/") and _owned(runtime):  # not another user's (su without -)
        return os.path.join(runtime, "vshx")
    return f"/tmp/vshx-{os.geteuid()}"


def _owned(directory: str) -> bool:
    try:
        st = os.stat(directory)
    except OSError:
        return False
    return (st.st_mode & 0o170000) == 0o040000 and st.st_uid == os.geteuid()


def private_directory(path: str) -> bool:
    """True when ``path`` is a real directory (not a symlink) of this user's, mode 0700: no
    one else can put a socket there (the server's credentials are checked all the same)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (
        (st.st_mode & 0o170000) == 0o040000
        and st.st_uid == os.geteuid()
        and not (st.st_mode & 0o077)
    )


def socket_path(directory: str | None = None) -> str:
    """The socket of the server for this interpreter and this vshx (another install or
    Python listens on a name of its own)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    python = (os.path.realpath(sys.executable), sys.prefix)  # `vshx` and `python -m vshx` alike
    tag = _fnv(os.fsencode("\0".join((*python, package))))
    return os.path.join(directory or socket_directory(), f"{SOCKET_PREFIX}{tag:08x}")


def peer(sock: object) -> tuple[int, int]:
    """The (pid, uid) the kernel gives for the other end of a connected Unix socket."""
    raw = sock.getsockopt(1, 17, 12)  # type: ignore[attr-defined]  # SOL_SOCKET, SO_PEERCRED
    return int.from_bytes(raw[0:4], sys.byteorder), int.from_bytes(raw[4:8], sys.byteorder)


def request(words: Sequence[str], query: str = "") -> bytes:
    """What the server needs to run the command as this process would (``query``: a question
    for the server itself instead, answered on these streams: ``status``)."""
    streams = [
        (s.encoding, s.errors, s.line_buffering, getattr(s, "write_through", False))
        for s in (sys.stdin, sys.stdout, sys.stderr)
    ]
    body = marshal.dumps(
        {
            "protocol": PROTOCOL,
            "query": query,
            "argv": [os.fsencode(w) for w in (sys.argv[0], *words)],
            "env": dict(os.environb),
            "cwd": os.getcwdb(),
            "umask": _umask(),
            "streams": streams,
        }
    )
    return len(body).to_bytes(4, "little") + body


def _umask() -> int:
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def run_warm(words: Sequence[str], query: str = "") -> None:
    """Run the command on this user's warm server and end with its status; return (having
    changed nothing) when there is no server to run it."""
    directory = socket_directory()
    path = socket_path(directory)
    try:
        os.stat(path)
    except OSError:
        return  # no server: the common case, one stat
    if not private_directory(directory) or any(_closed(fd) for fd in (0, 1, 2)):
        return
    if not query and _has_terminal():
        return  # a fork could not reach this terminal as /dev/tty (ssh, editors, polkit)
    try:
        body = request(words, query)
    except (OSError, ValueError):  # a working directory that was removed, an odd stream
        return
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(HANDSHAKE_SECONDS)  # a stopped or stuck server: run it here
    try:
        sock.connect(path)
        if peer(sock)[1] != os.geteuid() or _line(sock) != b"go":
            sock.close()
            return
        rights = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in (0, 1, 2))
        sent = sock.sendmsg([body], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
        if sent < len(body):
            sock.sendall(body[sent:])
        sock.settimeout(None)  # the command takes as long as it takes
    except OSError:
        sock.close()
        return  # nothing ran: the server takes a command only once it has all of it
    pending, previous = _forward_signals(sock)
    status = _line(sock)
    if status == b"local":  # the server will not run it (another PYTHONPATH...): run it here
        sock.close()
        import _signal

        for signum, handler in previous.items():
            _signal.signal(signum, handler)
        for signum in pending:  # a Ctrl-C meanwhile is this process's own again
            os.kill(os.getpid(), signum)
        return
    _end_as(status)


def _has_terminal() -> bool:
    """Whether this process has a controlling terminal (what ``/dev/tty`` opens)."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def _line(sock: object) -> bytes:
    """One line from the socket, without its newline; what came before an early end."""
    got = b""
    while not got.endswith(b"\n"):
        try:
            chunk = sock.recv(64)  # type: ignore[attr-defined]
        except InterruptedError:  # pragma: no cover (Python retries; kept for clarity)
            continue
        except OSError:
            break
        if not chunk:
            break
        got += chunk
    return got.split(b"\n", 1)[0]  # the first (a fork and its server may both say it)


def _forward_signals(sock: object) -> tuple[list[int], dict[int, object]]:
    """Ctrl-C, kill and a closed terminal reach the forked command as they would reach vshx;
    returns the signals forwarded so far and the handlers they replaced."""
    import _signal

    pending: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        pending.append(signum)
        try:
            sock.send(bytes([signum]))  # type: ignore[attr-defined]
        except OSError:
            pass

    return pending, {signum: _signal.signal(signum, forward) for signum in FORWARDED}


def _end_as(status: bytes) -> None:
    """End this process as the forked command ended: ``x N`` (its exit status), ``s N`` (the
    signal that killed it: this process dies of it too)."""
    kind, _, number = status.partition(b" ")
    if kind == b"x" and number.isdigit():
        os._exit(int(number))
    if kind == b"s" and number.isdigit():
        import _signal

        signum = int(number)
        try:
            _signal.signal(signum, _signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL's cannot be set: it kills all the same
            pass
        sys.stdout.flush()
        os.kill(os.getpid(), signum)
        os._exit(128 + signum)
    sys.stderr.write(
        "error: the warm vshx server ended without the command's exit status\n"
        "hint: vshx jobs shows whether it changed anything; vshx --warm status\n"
    )
    sys.stderr.flush()
    os._exit(1)
