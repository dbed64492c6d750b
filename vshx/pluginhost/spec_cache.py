"""A cache of plugin command specs, so shell completion need not import pluggy and plugins,
and a one-shot command loads only the plugin that provides it.

Completion only needs what the specs declare (names, options, completer kinds), not the code
that runs them.  The cache also records which entry point registers which command word, and
which plugins implement hooks other than registration (they are loaded with any command, so
their hooks keep firing).  The specs are still written once, in the plugins; this file is
derived from them and thrown away whenever the code that declares them may have changed.

That code is every module of every distribution providing a ``vshx`` entry point (an option
declared in a shared module counts), so the fingerprint is, per such distribution, its
``RECORD`` (which pip rewrites, with a hash of each installed file, on every install or
upgrade) and, for the packages it names that are imported from elsewhere than where it was
installed (an editable install, or a checkout on ``PYTHONPATH``), the newest mtime and the
number of their ``.py`` files.
"""

from __future__ import annotations

import json
import os
import zlib  # 0.1 ms to import where hashlib takes ~3 ms of every one-shot plugin command
from typing import Any

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


FORMAT = 2  # bump when the file's layout changes


def cache_name() -> str:
    return "commands.json"


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


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def _top_level(dist_info: str, points: list[EntryPoint]) -> list[str]:
    """The distribution's import packages: top_level.txt, else the entry points' packages."""
    names = _read_bytes(os.path.join(dist_info, "top_level.txt")).decode("utf-8", "replace")
    found = [n.strip() for n in names.splitlines() if n.strip()]
    for ep in points:
        top = ep.value.partition(":")[0].strip().split(".")[0]
        if top and top not in found:
            found.append(top)
    return sorted(found)


def _tree_stamp(package: str, installed_under: str) -> list[object]:
    """[package, where it is imported from, newest .py mtime, .py count], or the stamp of a
    package that its RECORD covers (imported from where the distribution was installed)."""
    try:
        origin = module_file(package)
    except (ImportError, ValueError):
        origin = ""
    if not origin:
        return [package, "", 0, 0]
    root = os.path.dirname(origin) if os.path.basename(origin) == "__init__.py" else origin
    if os.path.dirname(root) == installed_under:
        return [package, root, "RECORD", 0]
    newest, count = 0, 0
    files = [root] if os.path.isfile(root) else []
    for folder, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if d != "__pycache__"]
        files += [os.path.join(folder, n) for n in names if n.endswith(".py")]
    for path in files:
        try:
            newest = max(newest, os.stat(path).st_mtime_ns)
            count += 1
        except OSError:
            continue
    return [package, root, newest, count]


def fingerprint(points: list[EntryPoint]) -> list[list[object]]:
    """The entry points, then per distribution providing one: its RECORD's CRC-32 and the
    stamps of its packages (see the module docstring); found without importing anything."""
    result: list[list[object]] = [[ep.name, ep.value, ep.distribution] for ep in points]
    by_dist: dict[str, list[EntryPoint]] = {}
    for ep in points:
        by_dist.setdefault(ep.dist_info, []).append(ep)
    for dist_info, eps in sorted(by_dist.items()):
        record = zlib.crc32(_read_bytes(os.path.join(dist_info, "RECORD")))
        installed_under = os.path.dirname(dist_info)
        stamps = [_tree_stamp(p, installed_under) for p in _top_level(dist_info, eps)]
        result.append([dist_info, record, *stamps])
    return result


def _unavailable(*_args: object) -> int:
    raise RuntimeError("a cached spec is for completion only")


_last_read: tuple[list[EntryPoint], dict[str, Any] | None] | None = None


def _read(points: list[EntryPoint]) -> dict[str, Any] | None:
    """The cache's data when it is fresh for ``points``; read and checked once per process
    for the same entry points (a one-shot asks it twice: which plugin, does it change)."""
    global _last_read
    if _last_read is not None and _last_read[0] is points:
        return _last_read[1]
    data = _read_fresh(points)
    _last_read = (points, data)
    return data


def _read_fresh(points: list[EntryPoint]) -> dict[str, Any] | None:
    text = Place("cache").read(cache_name())
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    if data.get("fingerprint") != json.loads(json.dumps(fingerprint(points))):
        return None
    return data


def owners(points: list[EntryPoint]) -> tuple[dict[str, str], list[str]] | None:
    """Which entry point registers each command word, and which plugins implement other
    hooks; None when the cache is missing or stale."""
    data = _read(points)
    if data is None or "owners" not in data:
        return None
    return dict(data["owners"]), list(data.get("hook_users", []))


def changing(points: list[EntryPoint]) -> dict[str, bool] | None:
    """Per command word (names and aliases): whether its command changes things; None when
    the cache is missing or stale."""
    data = _read(points)
    if data is None:
        return None
    return {
        word: bool(raw["changes"])
        for raw in data["commands"]
        for word in (raw["name"], *raw["aliases"])
    }


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
    global _last_read
    _last_read = None  # what is written now is read again, fresh
    data = {
        "format": FORMAT,
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
