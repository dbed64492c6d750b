"""Options many commands share, declared once (as virsh's VIRSH_COMMON_OPT_DOMAIN_FULL)."""

from __future__ import annotations

from vshx.spec.spec import Opt, non_negative_int

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
BANDWIDTH = Opt(
    "bandwidth",
    "limit the copy rate (MiB/s, or bytes/s with --bytes)",
    "n",
    convert=non_negative_int,
)
BYTES = Opt("bytes", "--bandwidth is in bytes/s")
TIMEOUT = Opt(
    "timeout", "abort the job after this many seconds", "seconds", convert=non_negative_int
)
ASYNC = Opt("async", "start the block job and return without waiting")
FORCE = Opt("force", "go ahead although other images or domains use a file that changes")
SCAN = Opt(
    "scan",
    "also look in this directory for images whose chains use the files that change",
    "dir",
    complete="directory",
)
KEEP_RELATIVE = Opt("keep-relative", "write relative backing file names")
WAIT = Opt("wait", "virsh's spelling, accepted: vshx waits unless --async", excludes=("async",))
VERBOSE = Opt("verbose", "virsh's spelling, accepted: vshx always reports progress")
JOB_OPTIONS = (KEEP_RELATIVE, BANDWIDTH, BYTES, TIMEOUT, ASYNC, WAIT, VERBOSE)
