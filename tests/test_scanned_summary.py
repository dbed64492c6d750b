"""The scan summary a refusal's hint ends with (nu15 #10): on a host with many domains it
listed every disk and pool directory, dozens of paths, some of them other users' oddly named
ones.  It names the chain's own directories (and --scan's) and a few others, then counts."""

from __future__ import annotations

from vshx.merging.preflight import SHOWN_DIRS, UsageIndex


def summary(chain_dirs: set[str], others: list[str]) -> str:
    index = UsageIndex.__new__(UsageIndex)  # the summary alone: no libvirt read
    index.domains, index._others, index.pools = [], [], []
    index.directories = sorted(chain_dirs | set(others))
    index._chain_dirs = chain_dirs
    return index.scanned()


def test_the_chains_directories_are_named_and_the_rest_counted() -> None:
    others = [f"/srv/d{i:02d}" for i in range(SHOWN_DIRS + 5)]
    said = summary({"/var/lib/lab"}, others)
    assert "/var/lib/lab" in said
    assert sum(d in said for d in others) == SHOWN_DIRS
    assert said.endswith("and 5 more directories of domains' disks and pools")


def test_a_few_directories_are_all_named() -> None:
    said = summary({"/var/lib/lab"}, ["/srv/a", "/srv/b"])
    assert said.endswith("the images in /var/lib/lab, /srv/a, /srv/b")
