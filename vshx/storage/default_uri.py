"""The URI vshx uses without -c: the one virsh would use, resolved without connecting.

libvirt's order: ``LIBVIRT_DEFAULT_URI``; then ``uri_default`` in the client configuration
(``$XDG_CONFIG_HOME/libvirt/libvirt.conf`` for a user, ``/etc/libvirt/libvirt.conf`` for
root); then, for the QEMU driver, ``qemu:///system`` as root and ``qemu:///session`` for
everyone else.  Resolved without a connection because the prompt, printed ``virsh -c URI``
lines and the completion cache need it before (or without) one.
"""

from __future__ import annotations

import os
import re

SETTING = re.compile(r"""^\s*uri_default\s*=\s*(["'])(?P<uri>[^"']*)\1""", re.M)


def config_file() -> str:
    if os.geteuid() == 0:
        return "/etc/libvirt/libvirt.conf"
    from vshx.storage.statefiles import xdg_home

    return os.path.join(xdg_home("config"), "libvirt", "libvirt.conf")


def configured(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            found = SETTING.search(handle.read())
    except (OSError, UnicodeDecodeError):
        return None
    return found["uri"] if found and found["uri"] else None


def default_uri() -> str:
    """The URI and nothing else; why it was chosen is in :func:`why_default`."""
    return resolve()[0]


def why_default() -> str:
    return resolve()[1]


def resolve() -> tuple[str, str]:
    env = os.environ.get("LIBVIRT_DEFAULT_URI")
    if env:
        return env, "LIBVIRT_DEFAULT_URI says so"
    path = config_file()
    uri = configured(path)
    if uri:
        return uri, f"uri_default in {path}"
    if os.geteuid() == 0:
        return "qemu:///system", "libvirt's default for root"
    return "qemu:///session", "libvirt's default for a user who is not root"
