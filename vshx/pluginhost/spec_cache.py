"""A cache of plugin command specs, so shell completion need not import pluggy and plugins,
and a one-shot command loads only the plugin that provides it.

Completion only needs what the specs declare (names, options, completer kinds), not the code
that runs them.  The cache also records which entry point registers which command word, and
which plugins implement hooks other than registration (they are loaded with any command, so
their hooks keep firing).  The specs are still written once, in the plugins; this file is
derived from them and thrown away whenever an installed entry point or a plugin module file
changes.
"""

from __future__ import annotations

import json
import os
from typing import Any

from vshx import __version__
from vshx.pluginhost.entrypoints import EntryPoint
from vshx.spec.spec import Command, Opt
from vshx.storage.statefiles import Place

OPT_FIELDS = (
    "name",
    "help",
    "metavar",
    "positional",
    "required",
    "complete",
    "aliases",
    "short",
    "excludes",
    "implies",
    "multiple",
)


def cache_name() -> str:
    return f"commands-{__version__}.json"


def cache_path() -> str:
    return Place("cache").path(cache_name())


def module_file(module: str) -> str:
    """Where a module's source is, found without importing (and running) anything."""
    from importlib.machinery import PathFinder

    parts = module.split(".")
    search = None
    spec = None
    for depth in range(len(parts)):
        spec = PathFinder.find_spec(".".join(parts[: depth + 1]), search)
        if spec is None:
            return ""
        search = spec.submodule_search_locations
    return spec.origin or "" if spec else ""


def fingerprint(points: list[EntryPoint]) -> list[list[object]]:
    """Entry points plus the mtime of each plugin module's file (found without importing it)."""
    result: list[list[object]] = []
    for ep in points:
        try:
            origin = module_file(ep.value.partition(":")[0].strip())
            mtime = os.stat(origin).st_mtime_ns if origin else 0
        except (ImportError, OSError, ValueError):
            origin, mtime = "", 0
        result.append([ep.name, ep.value, ep.distribution, origin, mtime])
    return result


def _unavailable(*_args: object) -> int:
    raise RuntimeError("a cached spec is for completion only")


def _read(points: list[EntryPoint]) -> dict[str, Any] | None:
    text = Place("cache").read(cache_name())
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("fingerprint") != fingerprint(points):
        return None
    return data


def owners(points: list[EntryPoint]) -> tuple[dict[str, str], list[str]] | None:
    """Which entry point registers each command word, and which plugins implement other
    hooks; None when the cache is missing or stale."""
    data = _read(points)
    if data is None or "owners" not in data:
        return None
    return dict(data["owners"]), list(data.get("hook_users", []))


def load(points: list[EntryPoint]) -> list[Command] | None:
    """Commands from the cache, or None when it is missing or stale."""
    data = _read(points)
    if data is None:
        return None
    commands = []
    for raw in data["commands"]:
        fields: list[dict[str, Any]] = [
            {k: tuple(v) if isinstance(v, list) else v for k, v in o.items()}
            for o in raw["options"]
        ]
        options = tuple(Opt(**f) for f in fields)
        commands.append(
            Command(
                raw["name"],
                raw["help"],
                _unavailable,
                options,
                tuple(raw["aliases"]),
                group=raw["group"],
                common=raw["common"],
                changes=raw["changes"],
            )
        )
    return commands


def save(
    points: list[EntryPoint],
    commands: list[Command],
    owned_by: dict[str, str] | None = None,
    hook_users: list[str] | None = None,
) -> None:
    data = {
        "fingerprint": fingerprint(points),
        "owners": owned_by or {},
        "hook_users": hook_users or [],
        "commands": [
            {
                "name": c.name,
                "help": c.help,
                "aliases": list(c.aliases),
                "group": c.group,
                "common": c.common,
                "changes": c.changes,
                "options": [{f: getattr(o, f) for f in OPT_FIELDS} for o in c.options],
            }
            for c in commands
        ],
    }
    Place("cache").write(cache_name(), json.dumps(data))  # skipped when unsafe or read-only
