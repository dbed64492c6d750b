"""A one-shot merge opens its connection on a thread while its code is imported
(Connection.open_ahead), and drops it unclosed when the process ends (close(ending=True)).

libvirt's test driver (test:///default) needs no daemon; the one-shot runs go to a URI libvirt
refuses before it looks for a daemon, so these run anywhere libvirt-python is installed.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import weakref

import pytest

from vshx.errors import VshxError
from vshx.shell.connection import Connection
from vshx.storage import virt

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every open_connection call's URI, with the thread it ran on."""
    real = virt.open_connection
    calls: list[str] = []

    def counted(uri: str, events: bool = True) -> libvirt.virConnect:
        calls.append(f"{uri} {threading.current_thread().name} events={events}")
        return real(uri, events=events)

    monkeypatch.setattr(virt, "open_connection", counted)
    return calls


def test_get_takes_the_connection_opened_ahead(opens: list[str]) -> None:
    connection = Connection("test:///default")
    connection.open_ahead()
    conn = connection.get()
    assert conn.getURI() == "test:///default"
    assert connection.has_events
    assert opens == ["test:///default libvirt-open-ahead events=True"]
    assert connection.get() is conn  # opened once
    connection.close()


def test_a_refusal_met_ahead_is_raised_once_by_get(opens: list[str]) -> None:
    connection = Connection("nosuchdriver:///x")
    connection.open_ahead()
    with pytest.raises(VshxError) as ahead:
        connection.get()
    assert opens == ["nosuchdriver:///x libvirt-open-ahead events=True"]
    with pytest.raises(VshxError) as again:  # the next get tries again, as without open_ahead
        connection.get()
    assert again.value.message == ahead.value.message
    assert "cannot connect to nosuchdriver:///x" in ahead.value.message
    assert len(opens) == 2


def test_close_settles_a_connection_opened_ahead(opens: list[str]) -> None:
    connection = Connection("test:///default")
    connection.open_ahead()
    connection.close()  # never asked for: closed, not left open on its thread
    assert connection._ahead is None and connection._conn is None
    assert opens == ["test:///default libvirt-open-ahead events=True"]


def test_ending_drops_the_connection_without_closing_it() -> None:
    connection = Connection("test:///default")
    conn = connection.get()
    connection.close(ending=True)
    assert conn.isAlive() == 1  # left for the process's end to drop
    kept = weakref.ref(conn)
    del connection, conn  # the session goes first: the connection stays open all the same
    gc.collect()
    conn = kept()
    assert conn is not None and conn.isAlive() == 1
    connection = Connection("test:///default")
    connection.close()
    other = Connection("test:///default")
    conn2 = other.get()
    other.close()
    with pytest.raises(libvirt.libvirtError):
        conn2.getURI()  # a plain close closes it


def test_a_one_shot_merge_reports_a_refused_uri_once() -> None:
    """The connection opened ahead fails; the command says so once, as it did before."""
    from vshx.pluginhost.host import PluginHost
    from vshx.shell.builtins import BUILTINS

    primed = subprocess.run([sys.executable, "-m", "vshx", "help"], capture_output=True)
    assert primed.returncode == 0  # the spec cache now says which commands change things
    assert PluginHost(BUILTINS).changes("commit") is True  # so the one-shot opens ahead
    proc = subprocess.run(
        [sys.executable, "-m", "vshx", "-c", "nosuchdriver:///x", "commit", "dom", "vda"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("error: cannot connect to nosuchdriver:///x") == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_of_a_merge_opens_no_connection() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vshx", "-c", "nosuchdriver:///x", "commit", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
