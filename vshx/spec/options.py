"""Options many commands share, declared once (as virsh's VIRSH_COMMON_OPT_DOMAIN_FULL)."""

from __future__ import annotations

from vshx.spec.spec import Opt

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
