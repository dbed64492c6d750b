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

# a fixed list of words a plugin's option takes (``Opt(complete=choices("list", "start"))``):
# completed from the command's spec itself, so the shells' completion (answered from the
# cached spec, no plugin loaded) offers them too
CHOICES = "words:"


def choices(*words: str) -> str:
    """The ``Opt.complete`` kind that offers exactly ``words`` (no blanks in a word)."""
    return CHOICES + " ".join(words)


def chosen(kind: str) -> list[str] | None:
    """The words a ``choices`` kind offers; None for any other kind."""
    return kind[len(CHOICES) :].split() if kind.startswith(CHOICES) else None
