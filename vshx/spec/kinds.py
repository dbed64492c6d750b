"""The completion sources the core provides, by the name ``Opt(complete=...)`` uses.

Kept apart from the engine so that registering a plugin can check its option references
without importing the engine.  The engine has one provider per name (a test checks).
"""

CORE_COMPLETERS = (
    "domain",
    "domain_or_image",
    "disk",
    "layer",
    "image",
    "directory",
    "file",
    "snapshot",
    "uri",
    "command",
    "format",
    "shell",
    "route",
)
