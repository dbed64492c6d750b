"""Every failure a user can cause, as the one VshxError the session reports (never a traceback)."""

from __future__ import annotations

import os
import sys

from vshx.errors import VshxError, libvirt_hint
from vshx.spec.render import quoted


def os_hint(exc: OSError) -> str:
    """What to do about an error the operating system gave (a full disk, a permission)."""
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free space where it writes (df -h shows which file system), then run it again"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "check the permissions (ls -l), or run it as a user who may"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return "check the path (ls -l)"
    return "the operating system refused it: see the message above"


def as_user_error(exc: BaseException, name: str) -> VshxError | None:
    """The error to report for ``exc`` raised by command ``name``; None: let it propagate
    (a bug, with VSHX_DEBUG set, shows its traceback)."""
    if isinstance(exc, VshxError):
        return exc
    if isinstance(exc, SystemError) and isinstance(exc.__cause__, KeyboardInterrupt):
        exc = exc.__cause__  # Ctrl-C met in a callback from libvirt (its error handler)
    if isinstance(exc, OSError):
        name = exc.filename
        file = f" {quoted(name) if isinstance(name, str) else repr(name)}" if name else ""
        return VshxError(f"{exc.strerror or exc}{file}", os_hint(exc))
    if isinstance(exc, KeyboardInterrupt):
        return VshxError(
            "interrupted",
            "if a step was running, `vshx jobs` shows what is left and `vshx recover "
            "DOMAIN DISK` (or IMAGE) finishes it; after an interrupted qemu-img step it "
            "repairs leaked clusters (qemu-img check -r leaks)",
        )
    if isinstance(exc, ImportError) and (exc.name or "").startswith("libvirt"):
        return VshxError(
            f"libvirt-python cannot be loaded: {exc}",
            "vshx needs libvirt-python and libvirt's own library (make bootstrap installs "
            "them); a libvirt module found first on PYTHONPATH or in this directory hides them",
        )
    libvirt = sys.modules.get("libvirt")  # imported only by commands that used it
    if libvirt is not None and isinstance(exc, libvirt.libvirtError):
        return VshxError(exc.get_error_message() or str(exc), libvirt_hint(libvirt, exc))
    if not isinstance(exc, Exception) or os.environ.get("VSHX_DEBUG"):
        return None
    etree = sys.modules.get("xml.etree.ElementTree")  # XML libvirt gave that expat refuses
    if etree is not None and isinstance(exc, etree.ParseError):
        return VshxError(
            f"cannot read XML libvirt gave: {exc}",
            "a character XML 1.0 does not allow (a control character in a domain's or "
            "snapshot's description, title or metadata?) makes it unreadable, and vshx refuses "
            "what it cannot read; see it with virsh dumpxml (or snapshot-dumpxml), remove it "
            "(virsh desc, virsh edit), and run the command again",
        )
    # a bug in vshx or a plugin: one line, traceback on request
    return VshxError(
        f"internal error in {name}: {type(exc).__name__}: {exc}",
        "this is a bug; VSHX_DEBUG=1 shows the traceback",
    )
