"""Run every benchmark (startup, completion, merge, phases, flatten); each rewrites its section of
docs/benchmarks.md.  `make bench` runs this; the merge benchmark takes a few minutes."""

from __future__ import annotations

import completion
import flatten
import merge
import phases
import startup

if __name__ == "__main__":
    startup.main()
    completion.main()
    merge.main()
    phases.main()
    flatten.main()
