"""The program loads libvirt's shared libraries on a thread while Python loads vshx's code
(vshx/storage/preload.py, vshx/frontends/launch.py): checked in fresh processes, since what
a process has already imported decides what a load can show.  No daemon is needed: libvirt's
library answers ``getVersion`` by itself."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vshx.frontends.launch import wants_libvirt

ROOT = Path(__file__).resolve().parent.parent
HAS_LIBVIRT = importlib.util.find_spec("libvirtmod") is not None


def python(code: str, *argv: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; its printed words."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_the_launcher_starts_before_typing() -> None:
    """The loader can only overlap what is imported after it starts: the launcher and the
    package above it import no ``typing`` (~10 ms with ``re`` and ``enum``)."""
    code = "import sys, vshx.frontends.launch; print('typing' in sys.modules, 're' in sys.modules)"
    assert python(code) == ["False", "False"]


@pytest.mark.parametrize(
    ("words", "wanted"),
    [
        (["-c", "qemu:///system", "commit", "d", "vda"], True),
        (["list", "--all"], True),
        ([], True),  # the REPL connects
        (["complete", "--", "commit x vda --ba"], False),
        (["-c", "qemu:///system", "complete", "--", "chain "], False),
        (["--version"], False),
        (["commit", "--help"], False),
    ],
)
def test_which_command_lines_load_libvirt_ahead(words: list[str], wanted: bool) -> None:
    assert wants_libvirt(words) is wanted


@pytest.mark.skipif(not HAS_LIBVIRT, reason="libvirt-python is not installed here")
def test_the_library_is_mapped_before_the_import_and_the_import_then_works() -> None:
    code = (
        "import sys\n"
        "from vshx.storage import preload\n"
        "preload.load_libvirt_ahead()\n"
        "started = preload._loading is not None\n"
        "preload.wait_for_libvirt()\n"
        "maps = open('/proc/self/maps').read()\n"
        "mapped = 'libvirtmod' in maps and 'libvirt.so' in maps\n"
        "imported = 'libvirtmod' in sys.modules\n"
        "package = 'ctypes' in sys.modules\n"  # built from _ctypes alone: ~1.5 ms less
        "from vshx.storage.libvirt_lazy import libvirt\n"
        "print(started, mapped, imported, package, libvirt.getVersion() > 0)\n"
    )
    assert python(code) == ["True", "True", "False", "False", "True"]


@pytest.mark.skipif(not HAS_LIBVIRT, reason="libvirt-python is not installed here")
def test_work_handed_over_while_loading_runs_on_the_loaders_thread() -> None:
    """A thread started while the loader maps libraries waits until it is done (glibc's loader
    lock), and so does its starter: the connection opened ahead is handed to the loader's
    thread (after_load), which opens it once the libraries are in; the caller goes on at once.
    Once the loader is done, handed work gets a thread of its own (and raises nothing)."""
    code = (
        "import threading, time\n"
        "from vshx.storage import preload, virt\n"
        "from vshx.shell.connection import Connection\n"
        "real, where = virt.open_connection, []\n"
        "def opening(uri, events=True):\n"
        "    where.append(threading.current_thread().name)\n"
        "    return real(uri, events=events)\n"
        "virt.open_connection = opening\n"
        "preload.load_libvirt_ahead()\n"
        "connection = Connection('test:///default')\n"
        "connection.open_ahead()\n"
        "print(connection.get().getURI(), where)\n"
        "preload._loading.join()\n"
        "preload.after_load(lambda: where.append(threading.current_thread().name), 'late')\n"
        "preload.after_load(lambda: 1 / 0, 'failing')\n"
        "time.sleep(0.2)\n"
        "print(where[1])\n"
    )
    assert python(code) == ["test:///default", "['libvirt-preload']", "late"]


@pytest.mark.skipif(not HAS_LIBVIRT, reason="libvirt-python is not installed here")
def test_the_program_runs_with_libvirt_loaded_ahead() -> None:
    """The whole program, as the console script starts it: the loader's thread runs, and a
    command that needs libvirt's library (no daemon: a usage error after the import) ends as
    it always did, with error/hint and exit 2."""
    code = (
        "import sys, threading\n"
        "from vshx.storage import preload\n"
        "real = preload.load_libvirt_ahead\n"
        "def counted():\n"
        "    real()\n"
        "    print('loader', preload._loading is not None, flush=True)\n"
        "preload.load_libvirt_ahead = counted\n"
        "sys.argv = ['vshx', 'commit']\n"
        "from vshx.frontends.launch import run\n"
        "run()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.split() == ["loader", "True"]
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and "\nhint: " in proc.stderr


def test_a_missing_libvirt_leaves_the_import_to_say_so() -> None:
    """Where libvirt-python cannot be found the loader starts nothing and raises nothing: the
    import, later, reports what is missing as before."""
    code = (
        "from importlib.machinery import PathFinder\n"
        "from vshx.storage import preload\n"
        "real = PathFinder.find_spec\n"
        "def hidden(name, path=None, target=None):\n"
        "    return None if name == 'libvirtmod' else real(name, path, target)\n"
        "PathFinder.find_spec = hidden\n"
        "preload.load_libvirt_ahead()\n"
        "preload.wait_for_libvirt()\n"
        "print(preload._loading is None)\n"
    )
    assert python(code) == ["True"]


def test_python_m_vshx_runs_the_launcher() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "vshx", "--version"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    source = (ROOT / "vshx" / "__main__.py").read_text()
    assert "from vshx.frontends.launch import run" in source
