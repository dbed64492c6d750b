"""libvirt's shared libraries, loaded on a thread while Python loads vshx's own code.

Half of ``import libvirt`` (~20 ms of ~40 here) is the dynamic loader mapping libvirt-python's
C module and the ~60 libraries libvirt links.  Python's import holds the GIL while the loader
works; a call into libc's ``dlopen`` as a foreign function (ctypes) releases it, so the loader
runs here on the other core while the main thread imports vshx, and the later ``import
libvirt`` finds the library mapped (the loader only counts the second open) and runs only its
Python part.

Nothing is loaded that the import would not load: the file is the one the import finds,
opened with the import's own flags; when anything is missing the import meets it and reports
it as before.  This module imports no more than ``sys``, ``os``, ``threading`` and ``_ctypes``
(no ``typing``): the program starts it before anything else.
"""

from __future__ import annotations

import importlib
import sys
import threading
from os import RTLD_LOCAL, RTLD_NOW

TYPE_CHECKING = False  # typing itself is not imported here: see the docstring
if TYPE_CHECKING:
    from collections.abc import Callable

# Python's own C modules (lib-dynload) that vshx's code imports while the loader works: loaded
# first, as the loader opens one library at a time (one of these imported meanwhile would
# wait until libvirt's are in).  Only a matter of speed.
LOADED_FIRST = ("_typing", "_json", "_queue")

_loading: threading.Thread | None = None


def _libc_dlopen() -> Callable[[bytes, int], int]:
    """libc's ``dlopen`` as a foreign function (the GIL let go while it runs), built from
    ``_ctypes`` alone: the ``ctypes`` package (~1.5 ms to import here) is not needed for one
    call.  OSError, AttributeError or TypeError where this Python's ctypes cannot build it."""
    import _ctypes

    class Pointer(_ctypes._SimpleCData):  # type: ignore[type-arg]
        _type_ = "P"

    class Text(_ctypes._SimpleCData):  # type: ignore[type-arg]
        _type_ = "z"

    class Int(_ctypes._SimpleCData):  # type: ignore[type-arg]
        _type_ = "i"

    class Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL
        _restype_ = Pointer
        _argtypes_ = (Text, Int)

    class Program:  # what ctypes.CDLL(None) holds: the handle of the program's own symbols
        _handle = _ctypes.dlopen(None, RTLD_NOW | RTLD_LOCAL)  # type: ignore[arg-type]

    return Function(("dlopen", Program))  # type: ignore[arg-type]


def load_libvirt_ahead() -> None:
    """Start loading libvirt-python's C module on a thread (once per process)."""
    global _loading
    if _loading is not None or "libvirtmod" in sys.modules:
        return
    try:
        for name in LOADED_FIRST:
            importlib.import_module(name)
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec("libvirtmod")
        dlopen = _libc_dlopen()
    except (ImportError, OSError, AttributeError, TypeError):  # import as before
        return
    if spec is None or not spec.origin:
        return  # not installed: the import says so
    path, flags = spec.origin.encode(), sys.getdlopenflags()
    _loading = threading.Thread(target=dlopen, args=(path, flags), name="libvirt-preload")
    _loading.daemon = True
    _loading.start()


def wait_for_libvirt() -> None:
    """Return once the loader is done: ``import libvirt`` meanwhile would wait for it holding
    the GIL, and stop every other thread with it (this wait lets the GIL go)."""
    if _loading is not None:
        _loading.join()
