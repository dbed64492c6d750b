"""Where the image files are: this machine, or the host of a ``qemu+ssh://`` URI.

Every file vshx reads or changes for a chain (qcow2 headers, identity, free space, removal,
the chain's lock, qemu-img, the qemu-img processes at work) goes through the host chosen
from the connection URI (:func:`select`): on a local URI the plain ``os`` calls and /proc, on
``qemu+ssh://[USER@]HOST[:PORT]`` (and ``qemu+libssh2://``) the same questions asked on that
host through ``ssh`` (vshx.storage.ssh_host), which needs only a POSIX shell, coreutils and
qemu-img there.  Remote files are never read from the local file system.  Other remote
transports (tcp, tls) have no way to the files: they raise.

The functions below take and give what ``os`` does (``OSError`` with its errno, an
``os.stat_result``), so callers handle a remote file as they handle a local one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from vshx.errors import VshxError
from vshx.spec.render import quoted
from vshx.storage import procs
from vshx.storage.procs import Worker


class Host(Protocol):
    """What vshx asks of the machine that holds the images."""

    local: bool

    @property
    def name(self) -> str: ...  # "" for this machine, else what users call it (user@host:port)

    def printed(self, argv: Sequence[str], stdin: bool = False) -> list[str]: ...  # as printed

    def printed_shell(self, script: str, stdin: bool = False) -> list[str]: ...  # a sh pipeline

    def runnable(self, argv: Sequence[str]) -> list[str]: ...  # the argv vshx runs

    def stat(self, path: str, follow: bool = True) -> os.stat_result: ...

    def read(self, path: str, size: int, offset: int = 0) -> bytes: ...

    def realpath(self, path: str) -> str: ...

    def listdir(self, path: str) -> list[str]: ...

    def free_bytes(self, directory: str) -> int: ...

    def device_size(self, path: str) -> int: ...  # a block device's size in bytes

    def access(self, path: str, mode: int) -> bool: ...  # os.access there, as the ssh user

    def unlink(self, path: str) -> None: ...

    def create_new(self, path: str) -> None: ...  # an empty file; FileExistsError if taken

    def forget(self) -> None: ...  # drop what was read: files may have changed since

    def prefetch(
        self,
        paths: Iterable[str],
        directories: Iterable[str] = (),
        follow: Callable[[str, bytes, bool], list[str]] | None = None,
    ) -> None: ...

    def workers(self, paths: Iterable[str]) -> list[Worker]: ...  # qemu-img at work on paths

    def alive(self, worker: Worker) -> bool: ...  # that very process (pid + start) still runs


class LocalHost:
    """This machine: the ``os`` calls themselves; resolved paths are kept until ``forget``
    (one command reads the same chain's names a hundred times; each resolution is a few
    ``lstat`` calls)."""

    name = ""
    local = True

    def __init__(self) -> None:
        self._resolved: dict[str, str] = {}

    def printed(self, argv: Sequence[str], stdin: bool = False) -> list[str]:
        return list(argv)

    def printed_shell(self, script: str, stdin: bool = False) -> list[str]:
        return []

    def runnable(self, argv: Sequence[str]) -> list[str]:
        return list(argv)

    def stat(self, path: str, follow: bool = True) -> os.stat_result:
        return os.stat(path, follow_symlinks=follow)

    def read(self, path: str, size: int, offset: int = 0) -> bytes:
        # O_NONBLOCK: a FIFO put in a file's place after its type was checked (qcow2.py)
        # reads as empty instead of blocking; regular files and block devices ignore it
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            return os.pread(fd, size, offset)
        finally:
            os.close(fd)

    def realpath(self, path: str) -> str:
        found = self._resolved.get(path)
        if found is None:
            found = self._resolved[path] = os.path.realpath(path)
        return found

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def free_bytes(self, directory: str) -> int:
        stat = os.statvfs(directory)
        return stat.f_bavail * stat.f_frsize

    def device_size(self, path: str) -> int:
        # a block device's size is not in stat (st_size is 0): its end is what lseek finds
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            return os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)

    def access(self, path: str, mode: int) -> bool:
        return os.access(path, mode)

    def unlink(self, path: str) -> None:
        self.forget()
        os.unlink(path)

    def create_new(self, path: str) -> None:
        self.forget()
        # O_EXCL: fails on any name already there, a dangling symlink too (O_NOFOLLOW besides);
        # 0644 before the umask, as qemu-img creates its files
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        os.close(os.open(path, flags, 0o644))

    def forget(self) -> None:
        self._resolved.clear()

    def prefetch(
        self,
        paths: Iterable[str],
        directories: Iterable[str] = (),
        follow: Callable[[str, bytes, bool], list[str]] | None = None,
    ) -> None:
        pass  # a local read costs microseconds: nothing to gather

    def workers(self, paths: Iterable[str]) -> list[Worker]:
        return procs.at_work_on(paths)

    def alive(self, worker: Worker) -> bool:
        return procs.still_running(worker)


class Unreachable(LocalHost):
    """A remote URI without ssh (tcp, tls): libvirt reaches the host, vshx cannot reach its
    files.  Reading a file refuses; nothing is read from this machine instead."""

    local = False

    def __init__(self, uri: str, why: str | None = None, hint: str | None = None) -> None:
        super().__init__()
        self.name = uri
        self.uri = uri
        self.why = why or (
            f"vshx reaches the image files of a remote host only over ssh, not on {uri}"
        )
        self.hint = hint or "use a qemu+ssh://[USER@]HOST/system URI, or run vshx on that host"

    def refusal(self) -> VshxError:
        """Why no file of this host can be reached, as the error a command stops with."""
        return VshxError(self.why, self.hint)

    def _refuse(self) -> VshxError:
        return self.refusal()

    def printed(self, argv: Sequence[str], stdin: bool = False) -> list[str]:
        raise self._refuse()

    def printed_shell(self, script: str, stdin: bool = False) -> list[str]:
        raise self._refuse()

    def runnable(self, argv: Sequence[str]) -> list[str]:
        raise self._refuse()

    def stat(self, path: str, follow: bool = True) -> os.stat_result:
        raise self._refuse()

    def read(self, path: str, size: int, offset: int = 0) -> bytes:
        raise self._refuse()

    def realpath(self, path: str) -> str:
        return os.path.normpath(path)

    def listdir(self, path: str) -> list[str]:
        raise self._refuse()

    def free_bytes(self, directory: str) -> int:
        raise self._refuse()

    def device_size(self, path: str) -> int:
        raise self._refuse()

    def access(self, path: str, mode: int) -> bool:
        raise self._refuse()

    def unlink(self, path: str) -> None:
        raise self._refuse()

    def create_new(self, path: str) -> None:
        raise self._refuse()

    def forget(self) -> None:
        pass  # it resolved no name: every read refuses (each command line forgets, here too)

    def workers(self, paths: Iterable[str]) -> list[Worker]:
        raise self._refuse()

    def alive(self, worker: Worker) -> bool:
        raise self._refuse()


LOCAL = LocalHost()
_uri: str | None = None
_current: Host = LOCAL


def files_are_local(uri: str) -> bool:
    """True when the images named by a connection to ``uri`` are files on this machine."""
    host_part = uri.split("://", 1)[1] if "://" in uri else ""
    return host_part.startswith("/") or host_part == ""


# libvirt's ssh-transport URI parameters and the transports libvirt reads each one for
# (docs: remote.html "Extra parameters"); vshx reads each where libvirt does.  The ones that
# say how libvirt reaches libvirtd on the host (socket, netcat, mode, proxy, name) and the
# TLS ones change nothing for vshx, whose commands there are qemu-img and sh, not libvirtd.
SSH_TRANSPORTS = ("ssh", "libssh", "libssh2")
SSHAUTH_KEYS = {"agent", "privkey"}  # what ssh in batch mode can log in with
SSHAUTH_PROMPTS = {"password", "keyboard-interactive"}


def for_uri(uri: str) -> Host:
    """The host that holds the files of ``uri``'s domains.

    ``qemu+ssh://`` and libvirt's ``qemu+libssh2://`` are reached with OpenSSH's ``ssh`` (the
    same user, host, port, key and known hosts: a login libssh2 makes with a key or an agent,
    ssh makes too).  ``qemu+libssh://`` is refused (VshxError): libvirt 9.0's libssh client
    crashes or hangs a process that reads from several threads and starts subprocesses, as
    vshx does.  A parameter that would need what batch-mode
    ssh cannot do (``sshauth`` with passwords only, an unknown ``known_hosts_verify``) gives a
    host that refuses every file question with the reason, as tcp and tls do: live commands,
    which need only libvirt, still work."""
    if files_are_local(uri):
        return LOCAL
    from urllib.parse import parse_qs, unquote, urlsplit  # remote URIs only: ~2 ms to import

    try:
        parts = urlsplit(uri)
        port = parts.port  # a port out of range or not a number raises here
        hostname = parts.hostname
    except ValueError as exc:  # "Port out of range 0-65535", "Invalid IPv6 URL"
        raise VshxError(
            f"cannot read the URI {quoted(uri)}: {exc}",
            "give it as libvirt does: qemu+ssh://[USER@]HOST[:PORT]/system (-c or "
            "LIBVIRT_DEFAULT_URI)",
        ) from None
    transport = parts.scheme.partition("+")[2]
    if transport not in SSH_TRANSPORTS or not hostname:
        return Unreachable(uri)
    if transport == "libssh":
        raise VshxError(
            "vshx does not use libvirt's libssh transport (qemu+libssh://): libvirt 9.0's "
            "libssh client crashed (SIGSEGV) in 4 of 15 vshx runs here and hung a client "
            "that starts subprocesses while it reads",
            "use qemu+ssh:// or qemu+libssh2:// with the same user, host and port (vshx "
            "reaches the files with ssh either way)",
        )
    from vshx.storage.ssh_host import SshHost, SshTarget

    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    libssh = transport != "ssh"
    refused = _refused_parameters(uri, query, libssh)
    if refused is not None:
        return refused
    verify = query.get("known_hosts_verify", "normal") if libssh else "normal"
    return SshHost(
        SshTarget(
            host=hostname,
            user=unquote(parts.username) if parts.username else None,
            port=port,
            keyfile=query.get("keyfile") or None,
            no_verify=query.get("no_verify", "0") not in ("", "0") or verify == "ignore",
            no_tty=not libssh and query.get("no_tty", "0") not in ("", "0"),
            command=(query.get("command") or "ssh") if not libssh else "ssh",
            known_hosts=(query.get("known_hosts") or None) if libssh else None,
            accept_new=verify == "auto",
        )
    )


def _refused_parameters(uri: str, query: dict[str, str], libssh: bool) -> Host | None:
    """A host that refuses with the reason, when a parameter asks what vshx's ssh cannot do."""
    if not libssh:
        return None  # sshauth and known_hosts_verify are the libssh transports' (libvirt too)
    verify = query.get("known_hosts_verify", "normal")
    if verify not in ("normal", "auto", "ignore"):
        return Unreachable(
            uri,
            f"known_hosts_verify={quoted(verify)} is none of libvirt's values",
            "use normal, auto or ignore (libvirt's values), or leave it out",
        )
    methods = {m.strip() for m in query.get("sshauth", "").split(",") if m.strip()}
    unknown = methods - SSHAUTH_KEYS - SSHAUTH_PROMPTS
    if unknown:
        return Unreachable(
            uri,
            f"sshauth names {', '.join(sorted(unknown))}, which libvirt does not know",
            "libvirt's methods: agent, privkey, password, keyboard-interactive",
        )
    if methods and not methods & SSHAUTH_KEYS:
        return Unreachable(
            uri,
            f"vshx reaches the image files of {uri} with ssh in batch mode (no password "
            f"prompt), and sshauth={query['sshauth']} allows only passwords",
            "add agent or privkey to sshauth (and a key the host accepts), or run vshx on "
            "that host",
        )
    return None


def select(uri: str) -> Host:
    """Make ``uri``'s host the one every file question goes to (the session's connection)."""
    global _uri, _current
    if uri != _uri:
        _uri, _current = uri, for_uri(uri)
    return _current


def current() -> Host:
    return _current


# the os-like calls on the current host (callers import this module as ``files``)


def stat(path: str, follow: bool = True) -> os.stat_result:
    return _current.stat(path, follow)


def exists(path: str) -> bool:
    try:
        _current.stat(path)
    except (OSError, ValueError):
        return False
    return True


def lexists(path: str) -> bool:
    try:
        _current.stat(path, follow=False)
    except (OSError, ValueError):
        return False
    return True


def isfile(path: str) -> bool:
    import stat as modes

    try:
        return modes.S_ISREG(_current.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def isdir(path: str) -> bool:
    import stat as modes

    try:
        return modes.S_ISDIR(_current.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def read(path: str, size: int, offset: int = 0) -> bytes:
    return _current.read(path, size, offset)


def realpath(path: str) -> str:
    return _current.realpath(path)


def listdir(path: str) -> list[str]:
    return _current.listdir(path)


def free_bytes(directory: str) -> int:
    return _current.free_bytes(directory)


def device_size(path: str) -> int:
    """The size in bytes of the block device ``path`` on the image host."""
    return _current.device_size(path)


def access(path: str, mode: int) -> bool:
    """``os.access`` on the image host (as the user vshx logs in as there)."""
    return _current.access(path, mode)


def unlink(path: str) -> None:
    _current.unlink(path)


def create_new(path: str) -> None:
    """Create ``path`` empty on the image host, only if no file of that name is there (nor a
    dangling symlink): ``FileExistsError`` else, never a write over another file."""
    _current.create_new(path)


def forget() -> None:
    _current.forget()


def prefetch(
    paths: Iterable[str],
    directories: Iterable[str] = (),
    follow: Callable[[str, bytes, bool], list[str]] | None = None,
) -> None:
    """Gather what a scan will ask of these files and directories, and of the files
    ``follow`` finds named in their first bytes (on a remote host one round trip per level;
    nothing locally)."""
    _current.prefetch(paths, directories, follow)


def at_work_on(paths: Iterable[str]) -> list[Worker]:
    """Every qemu-img (or qemu-io) process on the image host whose command line names one of
    ``paths`` (that host's /proc; over ssh for a remote one).  Raises VshxError when the host
    cannot be asked: no answer is never "none runs"."""
    return _current.workers(paths)


def still_running(worker: Worker) -> bool:
    """True while that very process (same pid, same start time) runs on the host it was
    found on; VshxError when that host cannot be asked (never "it has ended")."""
    if worker.host == _current.name:
        return _current.alive(worker)
    if not worker.host:
        return LOCAL.alive(worker)
    raise VshxError(
        f"cannot tell whether qemu-img pid {worker.pid} on {worker.host} still runs: vshx is "
        f"connected to {_current.name or 'this machine'}",
        f"connect to its host (vshx -c URI of {worker.host}) and look again",
    )


@contextmanager
def temporary_directory(prefix: str) -> Iterator[str]:
    """A fresh private directory for throw-away images where the images are (this machine's
    temporary directory, or ``mktemp -d`` on the remote host), removed afterwards."""
    where = _current
    if where.local:
        import tempfile

        with tempfile.TemporaryDirectory(prefix=prefix) as made:
            yield made
        return
    from vshx.storage.ssh_host import SshHost

    if not isinstance(where, SshHost):
        raise VshxError(f"no temporary directory on {where.name}: it is not reachable over ssh")
    made = os.fsdecode(where.shell('exec mktemp -d "${TMPDIR:-/tmp}/$1XXXXXXXX"', prefix)).strip()
    try:
        yield made
    finally:
        where.shell('exec rm -rf -- "$1"', made)
