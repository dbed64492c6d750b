"""Where the image files are: this machine, or the host of a ``qemu+ssh://`` URI.

Every file vshx reads or changes for a chain (qcow2 headers, identity, free space, removal,
the chain's lock, qemu-img) goes through the host chosen from the connection URI
(:func:`select`): on a local URI the plain ``os`` calls, on ``qemu+ssh://[USER@]HOST[:PORT]``
the same questions asked on that host through ``ssh`` (vshx.storage.ssh_host), which needs
only a POSIX shell, coreutils and qemu-img there.  Remote files are never read from the local
file system.  Other remote transports (tcp, tls) have no way to the files: they raise.

The functions below take and give what ``os`` does (``OSError`` with its errno, an
``os.stat_result``), so callers handle a remote file as they handle a local one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from vshx.errors import VshxError


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

    def unlink(self, path: str) -> None: ...

    def forget(self) -> None: ...  # drop what was read: files may have changed since

    def prefetch(
        self,
        paths: Iterable[str],
        directories: Iterable[str] = (),
        follow: Callable[[str, bytes, bool], list[str]] | None = None,
    ) -> None: ...


class LocalHost:
    """This machine: the ``os`` calls themselves."""

    name = ""
    local = True

    def printed(self, argv: Sequence[str], stdin: bool = False) -> list[str]:
        return list(argv)

    def printed_shell(self, script: str, stdin: bool = False) -> list[str]:
        return []

    def runnable(self, argv: Sequence[str]) -> list[str]:
        return list(argv)

    def stat(self, path: str, follow: bool = True) -> os.stat_result:
        return os.stat(path, follow_symlinks=follow)

    def read(self, path: str, size: int, offset: int = 0) -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.pread(fd, size, offset)
        finally:
            os.close(fd)

    def realpath(self, path: str) -> str:
        return os.path.realpath(path)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def free_bytes(self, directory: str) -> int:
        stat = os.statvfs(directory)
        return stat.f_bavail * stat.f_frsize

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def forget(self) -> None:
        pass

    def prefetch(
        self,
        paths: Iterable[str],
        directories: Iterable[str] = (),
        follow: Callable[[str, bytes, bool], list[str]] | None = None,
    ) -> None:
        pass  # a local read costs microseconds: nothing to gather


class Unreachable(LocalHost):
    """A remote URI without ssh (tcp, tls): libvirt reaches the host, vshx cannot reach its
    files.  Reading a file refuses; nothing is read from this machine instead."""

    local = False

    def __init__(self, uri: str) -> None:
        self.name = uri
        self.uri = uri

    def _refuse(self) -> VshxError:
        return VshxError(
            f"vshx reaches the image files of a remote host only over ssh, not on {self.uri}",
            "use a qemu+ssh://[USER@]HOST/system URI, or run vshx on that host",
        )

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

    def unlink(self, path: str) -> None:
        raise self._refuse()


LOCAL = LocalHost()
_uri: str | None = None
_current: Host = LOCAL


def files_are_local(uri: str) -> bool:
    """True when the images named by a connection to ``uri`` are files on this machine."""
    host_part = uri.split("://", 1)[1] if "://" in uri else ""
    return host_part.startswith("/") or host_part == ""


def for_uri(uri: str) -> Host:
    """The host that holds the files of ``uri``'s domains."""
    if files_are_local(uri):
        return LOCAL
    from urllib.parse import parse_qs, unquote, urlsplit  # remote URIs only: ~2 ms to import

    parts = urlsplit(uri)
    transport = parts.scheme.partition("+")[2]
    if transport not in ("ssh", "libssh", "libssh2") or not parts.hostname:
        return Unreachable(uri)
    from vshx.storage.ssh_host import SshHost, SshTarget

    query = parse_qs(parts.query)
    keyfile = query.get("keyfile", [None])[-1]
    return SshHost(
        SshTarget(
            host=parts.hostname,
            user=unquote(parts.username) if parts.username else None,
            port=parts.port,
            keyfile=keyfile,
            no_verify=query.get("no_verify", ["0"])[-1] not in ("", "0"),
            no_tty=query.get("no_tty", ["0"])[-1] not in ("", "0"),
        )
    )


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


def unlink(path: str) -> None:
    _current.unlink(path)


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
    made = where.shell('exec mktemp -d "${TMPDIR:-/tmp}/$1XXXXXXXX"', prefix).decode().strip()
    try:
        yield made
    finally:
        where.shell('exec rm -rf -- "$1"', made)
