"""The last line of a block job's progress: how far libvirt says the job walked."""

from __future__ import annotations

import io

from vshx.plans.blockjob import Progress


def line(stopped: bool, cur: int, end: int = 64 << 20) -> str:
    out = io.StringIO()
    progress = Progress("block commit", out, quiet=False)
    progress.update(cur, end)
    progress.finish("done" if not stopped else "interrupted; job aborted", stopped=stopped)
    return out.getvalue()


def test_a_stopped_job_says_how_far_it_got_and_a_done_one_its_whole_span():
    """nu12 #16: an aborted commit said "walked 64.0 MiB" (the disk's size) after 3 %."""
    assert "walked 2.0 of 64.0 MiB" in line(True, 2 << 20)
    assert "walked 64.0 MiB" in line(False, 2 << 20)  # done: the last poll may lag its end
    assert "walked 64.0 MiB" in line(True, 64 << 20)
