"""The two kinds of failure a user can cause, mapped to virsh-like exit codes."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class VshxError(Exception):
    """A command failed for a reason the user can act on (exit 1).

    Printed as ``error: <message>`` and, when given, ``hint: <hint>``; never as a traceback.
    """

    exit_code = EXIT_FAILED

    def __init__(
        self, message: str, hint: str | None = None, *, clean: bool = False, partial: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.clean = clean  # raised by a step that left everything as it was before it
        # the chain is as before, but the step had written part of its data into a file (an
        # aborted commit's base): a plan that can be rolled forward keeps its journal
        self.partial = partial


class UsageError(VshxError):
    """The command line itself is wrong: unknown option, missing argument, bad value (exit 2)."""

    exit_code = EXIT_USAGE


def libvirt_hint(libvirt: object, exc: BaseException) -> str:
    """What to look at after an error libvirt raised: its code's name, and where to look."""
    code = exc.get_error_code() if hasattr(exc, "get_error_code") else None
    names = [n for n in dir(libvirt) if n.startswith("VIR_ERR_") and getattr(libvirt, n) == code]
    what = f"libvirt's error {names[0]}" if names else "libvirt's error"
    return (
        f"{what} (virsh shows the same); vshx stopped there. Look at: vshx jobs, "
        "vshx chain DOMAIN DISK, and /var/log/libvirt/qemu/DOMAIN.log"
    )


class ExitRequested(Exception):
    """Raised by the exit command; front ends stop reading lines."""
