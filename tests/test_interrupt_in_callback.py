"""Ctrl-C or SIGTERM that lands while libvirt calls back into Python (its error handler runs
inside the C call) reached vshx as a SystemError "returned a result with an exception set",
reported as "internal error ... this is a bug" (atk10 F3).  It is an interruption: reported
as one, with the way on.  Shown with libvirt's own test driver (in process, no daemon)."""

from __future__ import annotations

import importlib.util

import pytest

from vshx.shell.failures import as_user_error

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("libvirt") is None, reason="libvirt-python is not installed here"
)


def test_an_interrupt_inside_libvirts_error_handler_is_an_interruption() -> None:
    import libvirt

    def interrupted(_ctx: object, _err: object) -> None:
        raise KeyboardInterrupt

    conn = libvirt.open("test:///default")
    libvirt.registerErrorHandler(interrupted, None)
    try:
        with pytest.raises(SystemError) as raised:
            conn.lookupByName("no-such-domain")
    finally:
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        conn.close()
    said = as_user_error(raised.value, "chain")
    assert said is not None
    assert said.message == "interrupted"
    assert "vshx recover" in (said.hint or "")


def test_a_libvirt_python_that_cannot_load_is_said_so() -> None:
    """atk10 F5: a broken libvirt module (one planted first on PYTHONPATH) was "internal error
    ... this is a bug"; it is the installation's: said so, with the way to fix it."""
    broken = ImportError("libvirtmod.so: undefined symbol: virX", name="libvirtmod")
    said = as_user_error(broken, "list")
    assert said is not None
    assert said.message.startswith("libvirt-python cannot be loaded: ")
    assert "make bootstrap" in (said.hint or "")
    other = as_user_error(ImportError("no module named foo", name="foo"), "list")
    assert other is not None and other.message.startswith("internal error")
