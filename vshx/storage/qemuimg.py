"""Running qemu-img (and friends) from argv lists, with failures turned into user errors."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from typing import Any

from vshx.errors import VshxError

PACKAGES = {"qemu-img": "qemu-utils", "qemu-io": "qemu-utils", "virsh": "libvirt-clients"}


HINTS = (
    (
        "lock",
        "another process holds the image (a running domain, another qemu-img or vshx): "
        "see vshx jobs and list --all; nothing was changed by this step",
    ),
    ("Permission denied", "the file or its directory is not writable for this user"),
    (
        "No space left",
        "the file system is full: free space, then vshx recover DOMAIN DISK (or "
        "IMAGE) repairs what an interrupted step leaked",
    ),
    (
        "loop",
        "the backing chain refers back to itself; look at it with qemu-img info --backing-chain",
    ),
    ("No such file", "a file of the chain is missing: chain DOMAIN DISK shows which"),
)


def failure_hint(message: str) -> str | None:
    """The likely cause of a qemu-img failure, in words a user can act on."""
    for needle, hint in HINTS:
        if needle.lower() in message.lower():
            return hint
    return None


def run(argv: Sequence[str], stdin: str | None = None) -> str:
    """Run a command (never through a shell); return stdout or raise VshxError with its stderr."""
    return finish(start(argv, stdin is not None), argv, stdin)


def start(argv: Sequence[str], feeds_stdin: bool = False) -> subprocess.Popen[str]:
    """Start a command now and let it run while vshx does other work (see ``finish``)."""
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if feeds_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    except FileNotFoundError as exc:
        raise VshxError(
            f"{argv[0]} is not installed",
            f"install the Debian package {PACKAGES.get(argv[0], argv[0])}",
        ) from exc


def finish(proc: subprocess.Popen[str], argv: Sequence[str], stdin: str | None = None) -> str:
    """Wait for a started command; its stdout, or VshxError with its last line of stderr."""
    out, err = proc.communicate(stdin)
    if proc.returncode != 0:
        detail = (err or out).strip().splitlines()
        last = detail[-1] if detail else f"exit {proc.returncode}"
        raise VshxError(f"{argv[0]} failed: {last}", failure_hint(last))
    return out


def info_chain(path: str) -> list[dict[str, Any]]:
    """The backing chain of an image as qemu-img reports it, top first (-U: works while in use).

    Read from the qcow2 headers where they give the same facts; qemu-img for the rest."""
    from vshx.storage.qcow2 import read_chain

    quick = read_chain(path)
    if quick is not None:
        return quick
    out = run(["qemu-img", "info", "--backing-chain", "--output=json", "-U", "--", path])
    data = json.loads(out)
    return data if isinstance(data, list) else [data]


def info(path: str) -> dict[str, Any]:
    """qemu-img info of one image, without following its backing chain."""
    return json.loads(run(["qemu-img", "info", "--output=json", "-U", "--", path]))
