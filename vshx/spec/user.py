"""Who asked: the user behind sudo when there is one (a student on a shared host)."""

from __future__ import annotations

import os
import re


def invoking_user() -> str:
    """``SUDO_USER`` when set, else the login name; safe inside a lab or file name."""
    user = os.environ.get("SUDO_USER")
    if not user:
        import getpass  # with termios: only when there is no sudo user to name

        user = getpass.getuser()
    return re.sub(r"[^A-Za-z0-9_.-]", "-", user) or "user"


def demo_name() -> str:
    """The practice domain `make demo` and `--tour` use: ``vshx-demo`` for root itself,
    ``vshx-demo-USER`` for everyone else, so students on one host never share one."""
    user = invoking_user()
    return "vshx-demo" if user == "root" else f"vshx-demo-{user}"
