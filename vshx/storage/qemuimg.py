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
    try:
        proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise VshxError(
            f"{argv[0]} is not installed",
            f"install the Debian package {PACKAGES.get(argv[0], argv[0])}",
        ) from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit {proc.returncode}"
        raise VshxError(f"{argv[0]} failed: {last}", failure_hint(last))
    return proc.stdout


def info_chain(path: str) -> list[dict[str, Any]]:
    """The backing chain of an image as qemu-img reports it, top first (-U: works while in use)."""
    out = run(["qemu-img", "info", "--backing-chain", "--output=json", "-U", "--", path])
    data = json.loads(out)
    return data if isinstance(data, list) else [data]


def info(path: str) -> dict[str, Any]:
    """qemu-img info of one image, without following its backing chain."""
    return json.loads(run(["qemu-img", "info", "--output=json", "-U", "--", path]))
