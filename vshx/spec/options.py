"""Options many commands share, declared once (as virsh's VIRSH_COMMON_OPT_DOMAIN_FULL)."""

from __future__ import annotations

import re
from typing import Any

from vshx.spec.spec import Args, Opt, whole_number

DOMAIN = Opt(
    "domain", "domain name, id or uuid", "domain", positional=True, required=True, complete="domain"
)
DOMAIN_OR_IMAGE = DOMAIN._replace(
    help="domain name, id or uuid (or an image path)",
    metavar="domain|image",
    complete="domain_or_image",
)
DISK = Opt(
    "disk",
    "disk target (vda) or its source file",
    "disk",
    positional=True,
    aliases=("path",),
    complete="disk",
)
JSON = Opt("json", "print one JSON document instead of a table (for scripts)")

# the merge commands' options (commit, pull, flatten, shorten, rebase)
BASE = Opt("base", "the lower layer (path, file name, or vda[N])", "ref", complete="layer")
ULONG_MAX = 2**64 - 1  # virsh reads --bandwidth into an unsigned long
MIB_LIMIT = (2**63 - 1) >> 20  # libvirt's limit in MiB/s ("bandwidth must be less than ...")
BYTES_LIMIT = 2**63 - 1  # QEMU's speed is an int64
SCALES = {"": 1, "b": 1, "byte": 1, "bytes": 1}
for _power, _letter in enumerate("kmgtpe", start=1):
    SCALES |= {_letter: 1024**_power, f"{_letter}ib": 1024**_power, f"{_letter}b": 1000**_power}


class Scaled(int):
    """A --bandwidth given with a unit suffix (``10M``): bytes/s, MiB/s only once settled."""


def bandwidth(text: str) -> int:
    """virsh's --bandwidth: a whole number, or one with a unit suffix (``10M``, ``1GiB``)
    meaning bytes/s; negative numbers (which virsh wraps to 2**64-1) are refused."""
    match = re.fullmatch(r"\s*(-?)([0-9]+)([a-zA-Z]*)", text)
    if match is None:
        raise ValueError("not a whole number, nor one with a unit such as 10M")
    sign, digits, suffix = match.groups()
    if sign and int(digits):
        raise ValueError("must not be negative (virsh wraps it to 2**64-1, which libvirt refuses)")
    if suffix.lower() not in SCALES:
        raise ValueError(f"unknown unit {suffix!r}: use k, M, G, T, P or E (KiB, MB, ...)")
    value = int(digits) * SCALES[suffix.lower()]
    if value > ULONG_MAX:
        raise ValueError(f"must be at most {ULONG_MAX} bytes/s")
    return Scaled(value) if suffix else value


def settle_bandwidth(value: Any, args: Args) -> int:
    """The rate in the unit the job takes: bytes/s with --bytes, else MiB/s (a suffixed value
    is bytes, rounded down to MiB as virsh does); within libvirt's and QEMU's limits."""
    rate = int(value) if args.get("bytes") or not isinstance(value, Scaled) else int(value) >> 20
    limit, unit = (BYTES_LIMIT, "bytes/s") if args.get("bytes") else (MIB_LIMIT, "MiB/s")
    if rate > limit:
        raise ValueError(f"must be at most {limit} {unit}")
    return rate


def timeout_seconds(text: str) -> int:
    """virsh's --timeout: whole seconds from 1 to 2147483 (INT_MAX milliseconds)."""
    return whole_number(text, 1, 2**31 // 1000)


BANDWIDTH = Opt(
    "bandwidth",
    "limit the copy rate (MiB/s, or bytes/s with --bytes; 10M: a size per second)",
    "n",
    convert=bandwidth,
    settle=settle_bandwidth,
)
BYTES = Opt("bytes", "--bandwidth is in bytes/s")
TIMEOUT = Opt(
    "timeout", "abort the job after this many seconds", "seconds", convert=timeout_seconds
)
ASYNC = Opt(
    "async",
    "as virsh: when --timeout or Ctrl-C aborts the job, do not wait for it to end",
    needs=("wait", "timeout"),
)
BACKGROUND = Opt(
    "background",
    "start the block job and return at once (vshx jobs follows it)",
    excludes=("wait", "async", "timeout", "verbose"),
)
FORCE = Opt("force", "go ahead although other images or domains use a file that changes")
SCAN = Opt(
    "scan",
    "also look in this directory for images whose chains use the files that change",
    "dir",
    complete="directory",
)
KEEP_RELATIVE = Opt("keep-relative", "write relative backing file names")
WAIT = Opt("wait", "virsh's spelling, accepted: vshx waits unless --background")
VERBOSE = Opt(
    "verbose", "virsh's spelling, accepted: vshx always reports progress", needs=ASYNC.needs
)
JOB_OPTIONS = (KEEP_RELATIVE, BANDWIDTH, BYTES, TIMEOUT, ASYNC, WAIT, VERBOSE, BACKGROUND)
