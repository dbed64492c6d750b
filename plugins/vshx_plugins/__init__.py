"""vshx's built-in plugins, each registered through the ``vshx`` entry-point group."""
