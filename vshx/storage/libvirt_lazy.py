"""libvirt, imported on first use.

``import libvirt`` costs ~30 ms; completion of a command name or an option needs none of it.
Modules write ``from vshx.storage.libvirt_lazy import libvirt`` and use it as the module itself.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from vshx.storage.preload import wait_for_libvirt


class _LazyModule:
    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            wait_for_libvirt()
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


libvirt: Any = _LazyModule("libvirt")
