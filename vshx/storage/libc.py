"""libc's functions as foreign functions, built from ``_ctypes`` alone.

vshx calls two functions of libc that Python does not offer: ``dlopen`` (storage/preload.py:
libvirt's libraries loaded on a thread) and ``statx`` (storage/identity.py: a file's birth
time).  The ``ctypes`` package builds every C type when imported (~1.5-2 ms of a one-shot
here); these calls need four.  Like ctypes' own, each call lets the GIL go while it runs.
Nothing here imports ``typing``: the program's first lines load it (frontends/launch.py).
"""

from __future__ import annotations

import _ctypes
from os import RTLD_LOCAL, RTLD_NOW

TYPE_CHECKING = False  # typing itself is not imported here: see the docstring
if TYPE_CHECKING:
    from collections.abc import Callable
    from ctypes import c_char


class Pointer(_ctypes._SimpleCData):  # type: ignore[type-arg]
    _type_ = "P"  # void *, read back as an int (None for NULL)


class Text(_ctypes._SimpleCData):  # type: ignore[type-arg]
    _type_ = "z"  # const char *, given as bytes


class Int(_ctypes._SimpleCData):  # type: ignore[type-arg]
    _type_ = "i"


class Char(_ctypes._SimpleCData):  # type: ignore[type-arg]
    _type_ = "c"


class _Program:
    """What ``ctypes.CDLL(None)`` holds: the handle of the program's own symbols (libc's)."""

    _handle = _ctypes.dlopen(None, RTLD_NOW | RTLD_LOCAL)  # type: ignore[arg-type]


def function(name: str, restype: type, argtypes: tuple[type, ...]) -> Callable[..., object]:
    """libc's ``name``, called with C's cdecl convention; AttributeError where libc has none."""

    class Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL
        _restype_ = restype
        _argtypes_ = argtypes

    return Function((name, _Program))  # type: ignore[arg-type]


def buffer(size: int) -> _ctypes.Array[c_char]:
    """``size`` zeroed bytes C may write into (passed as a pointer); read back by ``.raw``."""

    class Buffer(_ctypes.Array):  # type: ignore[type-arg]
        _type_ = Char
        _length_ = size

    return Buffer()
