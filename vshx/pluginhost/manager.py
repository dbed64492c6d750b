"""vshx's pluggy plugin manager: pluggy's, reading vshx's own ``hookimpl`` marker too.

Imported only when a hook must go through pluggy (vshx.pluginhost.host loads it lazily).
"""

from __future__ import annotations

from typing import Any, cast

import pluggy

from vshx.pluginhost import hookspecs
from vshx.pluginhost.markers import PROJECT, options_of


class Manager(pluggy.PluginManager):
    """``parse_hookimpl_opts`` is pluggy's documented place to pick implementations up."""

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.add_hookspecs(hookspecs)

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> pluggy.HookimplOpts | None:
        options = options_of(plugin, name) if name.startswith(f"{PROJECT}_") else None
        if options is None:  # pluggy's own HookimplMarker("vshx"), or no hook at all
            return super().parse_hookimpl_opts(plugin, name)
        return cast(pluggy.HookimplOpts, dict(options))
