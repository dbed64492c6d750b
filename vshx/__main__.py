"""`python -m vshx` runs the same entry point as the `vshx` script.

``-m`` puts the current directory first on sys.path; drop it so that plugins (entry points)
resolve only to installed code, never to a same-named package where the user stands.
"""

import os
import sys

if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from vshx.frontends.launch import run

run()
