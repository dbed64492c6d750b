"""A loopback OpenSSH server of the tests' own: this machine, reached as a remote host.

The remote-host tests (qemu+ssh:// URIs) and the Ansible tests log in to it as the running user
with a key made for the run; the server has its own host key, listens on 127.0.0.1 only, and
its address is known only to an ssh wrapper the tests put first on PATH (the real user's
~/.ssh is never read or written: libvirt's ssh transport and vshx run that same wrapper).
`hidden()` runs a command in a private mount namespace where chosen directories are empty, so a
local read of a path that should be read on the remote host fails.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
SSH = shutil.which("ssh") or "/usr/bin/ssh"
# the wrapper's script: the real ssh with the test's own config (known hosts, no agent)
WRAPPER = '#!/bin/sh\nexec {ssh} -F {config} "$@"\n'
# mounts an empty tmpfs over each directory named before `--`, then runs the rest
HIDE = 'while [ "$1" != -- ]; do mount -t tmpfs vshx-hidden "$1"; shift; done; shift; exec "$@"'


@dataclass(frozen=True)
class Sshd:
    """A running loopback sshd and what a client needs to log in to it."""

    directory: Path
    port: int
    user: str
    key: Path
    bin_dir: Path
    process: subprocess.Popen[bytes]

    def uri(self, path: str = "/system", host: str = "127.0.0.1") -> str:
        """The libvirt URI of this machine through the server (key named by `keyfile`)."""
        return f"qemu+ssh://{self.user}@{host}:{self.port}{path}?keyfile={self.key}"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment whose `ssh` is the wrapper that knows this server's host key."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = f"{self.bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
        return env

    def ssh_argv(self, *remote: str) -> list[str]:
        """An ssh command line that runs REMOTE (one shell string) on the server."""
        return [
            str(self.bin_dir / "ssh"),
            "-p",
            str(self.port),
            "-i",
            str(self.key),
            "-o",
            "BatchMode=yes",
            f"{self.user}@127.0.0.1",
            *remote,
        ]

    def stop(self) -> None:
        """Stop the server (its keys stay in its directory, which the caller owns)."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_port() -> int:
    """A loopback port nobody listens on now (the server retries if it is taken meanwhile)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def keygen(path: Path) -> None:
    """An ed25519 key pair without a passphrase at PATH and PATH.pub."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vshx-test", "-f", str(path)],
        check=True,
    )


def write_configs(directory: Path, port: int) -> None:
    """The server's config and the client's (which trusts only the server's host key)."""
    host_key = directory / "host_key"
    (directory / "sshd_config").write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {directory / 'authorized_keys'}",
                f"PidFile {directory / 'sshd.pid'}",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "MaxStartups 100:30:200",
                "MaxSessions 100",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    public = (directory / "host_key.pub").read_text().split()
    (directory / "known_hosts").write_text(
        f"[127.0.0.1]:{port} {public[0]} {public[1]}\n[localhost]:{port} {public[0]} {public[1]}\n"
    )
    (directory / "ssh_config").write_text(
        "\n".join(
            [
                "Host *",
                f"  UserKnownHostsFile {directory / 'known_hosts'}",
                "  GlobalKnownHostsFile /dev/null",
                "  StrictHostKeyChecking yes",
                "  IdentitiesOnly yes",
                f"  IdentityFile {directory / 'client_key'}",
                "  IdentityAgent none",
                "  BatchMode yes",
                "",
            ]
        )
    )


def start_sshd(directory: Path) -> Sshd:
    """Start a fresh server whose keys, config and logs live in DIRECTORY."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    keygen(directory / "host_key")
    keygen(directory / "client_key")
    shutil.copy(directory / "client_key.pub", directory / "authorized_keys")
    bin_dir = directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    # sshd needs its privilege separation directory
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    last = ""
    for _attempt in range(5):
        port = free_port()
        write_configs(directory, port)
        wrapper = bin_dir / "ssh"
        wrapper.write_text(WRAPPER.format(ssh=SSH, config=directory / "ssh_config"))
        wrapper.chmod(0o755)
        log = directory / "sshd.log"
        process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(directory / "sshd_config")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )
        server = Sshd(
            directory, port, getpass.getuser(), directory / "client_key", bin_dir, process
        )
        if answers(server):
            return server
        server.stop()
        last = log.read_text(errors="replace")
    raise RuntimeError(f"the test sshd did not start:\n{last}")


def answers(server: Sshd, deadline: float = 30.0) -> bool:
    """Whether the server lets the test user in and runs a command (waits until DEADLINE)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if server.process.poll() is not None:
            return False
        done = subprocess.run(server.ssh_argv("true"), capture_output=True, timeout=30, check=False)
        if done.returncode == 0:
            return True
        time.sleep(0.2)
    return False


def hidden(directories: list[str | Path], argv: list[str]) -> list[str]:
    """ARGV run where each of DIRECTORIES is an empty tmpfs (a private mount namespace)."""
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        HIDE,
        "sh",
        *[str(d) for d in directories],
        "--",
        *argv,
    ]
