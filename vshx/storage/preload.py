"""libvirt's shared libraries, loaded on a thread while Python loads vshx's own code.

Half of ``import libvirt`` (~20 ms of ~40 here) is the dynamic loader mapping libvirt-python's
C module and the ~60 libraries libvirt links.  Python's import holds the GIL while the loader
works; a call into libc's ``dlopen`` as a foreign function (storage/libc.py) releases it, so
the loader runs here on the other core while the main thread imports vshx, and the later
``import libvirt`` finds the library mapped (the loader only counts the second open) and runs
only its Python part.

A thread started while the loader maps libraries waits until it is done (glibc's loader lock:
each new thread's thread-local storage), and so does the thread that starts it: work meant
for a new thread meanwhile (opening the connection) is handed to ``after_load`` and runs on
the loader's own thread once the libraries are in, not on a thread of its own.

Nothing is loaded that the import would not load: the file is the one the import finds,
opened with the import's own flags; when anything is missing the import meets it and reports
it as before.  This module imports no more than ``sys``, ``threading`` and ``vshx.storage.libc``
(no ``typing``): the program starts it before anything else.
"""

from __future__ import annotations

import importlib
import sys
import threading

TYPE_CHECKING = False  # typing itself is not imported here: see the docstring
if TYPE_CHECKING:
    from collections.abc import Callable

# Python's own C modules (lib-dynload) that vshx's code imports while the loader works: loaded
# first, as the loader opens one library at a time (one of these imported meanwhile would
# wait until libvirt's are in).  Only a matter of speed.
LOADED_FIRST = ("_typing", "_json", "_queue")

_loading: threading.Thread | None = None
_loaded = threading.Event()  # set once the loader's libraries are in (or it gave up)
_queued: list[Callable[[], object]] = []  # after_load's work, for the loader's thread
_guard = threading.Lock()
_taking = True  # the loader's thread still takes queued work


def load_libvirt_ahead() -> None:
    """Start loading libvirt-python's C module on a thread (once per process)."""
    global _loading
    if _loading is not None or "libvirtmod" in sys.modules:
        return
    try:
        for name in LOADED_FIRST:
            importlib.import_module(name)
        from importlib.machinery import PathFinder

        from vshx.storage import libc

        spec = PathFinder.find_spec("libvirtmod")
        dlopen = libc.function("dlopen", libc.Pointer, (libc.Text, libc.Int))
    except (ImportError, OSError, AttributeError, TypeError):  # import as before
        return
    if spec is None or not spec.origin:
        return  # not installed: the import says so
    path, flags = spec.origin.encode(), sys.getdlopenflags()
    _loading = threading.Thread(target=_load, args=(dlopen, path, flags), name="libvirt-preload")
    _loading.daemon = True
    _loading.start()


def _load(dlopen: Callable[[bytes, int], object], path: bytes, flags: int) -> None:
    """The loader's thread: map the libraries, then run the work queued meanwhile."""
    global _taking
    try:
        dlopen(path, flags)
    finally:
        _loaded.set()
    while True:
        with _guard:
            if not _queued:
                _taking = False
                return
            work = _queued.pop(0)
        try:
            work()
        except Exception:  # work reports its own outcome; the rest of the queue still runs
            pass


def after_load(work: Callable[[], object], name: str) -> None:
    """Run ``work`` on the loader's thread once its libraries are in, or, where no loader
    runs any more (or never ran), on a new daemon thread called ``name``.  ``work`` reports
    its own outcome (what it raises ends only the loader's thread)."""
    with _guard:
        if _loading is not None and _taking:
            _queued.append(work)
            return
    threading.Thread(target=work, name=name, daemon=True).start()


def wait_for_libvirt() -> None:
    """Return once the loader's libraries are in: ``import libvirt`` meanwhile would wait
    for it holding the GIL, and stop every other thread with it (this wait lets the GIL go)."""
    if _loading is not None:
        _loaded.wait()
