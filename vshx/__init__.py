"""vshx: a virsh-like shell for shortening qcow2 backing chains without losing a byte."""

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    """``__version__`` is the installed distribution's (one declaration: pyproject.toml).

    Read on first use only: importlib.metadata costs ~40 ms that a one-shot command or a
    completion keystroke does not need.
    """
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("vshx")
        except PackageNotFoundError:  # run from a source tree that was never installed
            found = "0+unknown"
        globals()["__version__"] = found
        return found
    raise AttributeError(f"module 'vshx' has no attribute {name!r}")
