"""``vshx --tour=LAB``: the tour on a practice domain of the user's naming (nu13 #1: on a
shared host with a naming rule, ``vshx-demo`` could not be used); built with lab-create when
it is not there, then the REPL reads on (here from a pipe)."""

from __future__ import annotations

import pytest

from tests.conftest import LAB_PREFIX, domain_exists, run_vshx

pytestmark = pytest.mark.libvirt


def test_the_tour_builds_and_shows_the_lab_it_is_given() -> None:
    name = f"{LAB_PREFIX}tour"
    try:
        tour = run_vshx(f"--tour={name}", stdin=f"chain {name} vda\nexit\n")
        assert tour.returncode == 0, tour.stderr
        assert f"The practice domain {name} has the chain" in tour.stdout
        assert f"1. chain {name} vda" in tour.stdout
        assert "base.qcow2 <- sn1.qcow2" in tour.stdout  # the line read after the tour
        assert not domain_exists("vshx-demo") or "vshx-demo " not in tour.stdout
    finally:
        run_vshx("lab-destroy", name)
    assert not domain_exists(name)
    bad = run_vshx("--tourx")
    assert bad.returncode == 2 and "unknown option --tourx" in bad.stderr


def test_the_tour_of_a_lab_merged_since_says_its_chain_and_how_to_rebuild_it() -> None:
    """nu15 #1: after a commit the tour described the fresh chain, and its step 2 then
    failed ("'sn3' is not a layer"); it now says the chain the lab has and the rebuild."""
    name = f"{LAB_PREFIX}tourm"
    try:
        assert run_vshx("lab-create", name).returncode == 0
        merged = run_vshx("commit", name, "vda", "--base", "sn1", "--top", "sn3")
        assert merged.returncode == 0, merged.stderr
        tour = run_vshx(f"--tour={name}", stdin="exit\n")
        assert tour.returncode == 0, tour.stderr
        assert f"The practice domain {name} has base <- sn1 <- sn4, not" in tour.stdout
        assert f"lab-create {name}" in tour.stdout
        assert "--top sn3" not in tour.stdout
    finally:
        run_vshx("lab-destroy", name)
    assert not domain_exists(name)


@pytest.mark.parametrize(
    ("words", "hint"),
    [
        (["--tour", "mylab"], "hint: for a lab of your naming: vshx --tour=mylab\n"),
        (["--tour", "my lab"], "hint: for a lab of your naming: vshx '--tour=my lab'\n"),
        (["--tour=mylab", "list"], "hint: vshx --help\n"),
        (["--tour", "-f", "script"], "hint: vshx --help\n"),
        (["--tour="], "hint: vshx --help\n"),  # atk21: it toured vshx-demo
    ],
)
def test_tour_with_a_command_is_a_usage_error_that_says_how_to_name_the_lab(
    words: list[str], hint: str
) -> None:
    """nu17 #7: `vshx --tour mylab` said "unknown command 'mylab'" and nothing of --tour=LAB;
    a command or script after --tour ran and the tour was silently dropped."""
    done = run_vshx(*words)
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert done.stderr.startswith("error: --tour"), done.stderr
    assert done.stderr.endswith(hint), done.stderr
