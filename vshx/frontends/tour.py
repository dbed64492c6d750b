"""`vshx --tour`: say which URI and why, build the practice domain if needed, show the steps.

Free of prompt-toolkit: the tour also runs when its input is a pipe (a script or a test).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vshx.errors import EXIT_OK, VshxError
from vshx.shell.session import Session
from vshx.storage.virt import domain_chain

if TYPE_CHECKING:
    import libvirt

# the chain a fresh practice lab's vda has (lab-create's default 4 layers): the steps below
# name its layers
FRESH = ("base", "sn1", "sn2", "sn3", "sn4")

TOUR = """\
Welcome to vshx. The practice domain {demo} has the chain base <- sn1 <- sn2 <- sn3 <- sn4.
  1. chain {demo} vda                                   (see the layers; Tab completes)
  2. commit {demo} vda --base sn1 --top sn3 --dry-run   (the virsh command, not run)
  3. commit {demo} vda --base sn1 --top sn3 --teach     (run it; then snapshot-cleanup {demo})
Type help for every command, exit or Ctrl-D to leave."""


def start_tour(session: Session, lab: str = "") -> int:
    """Say which URI and why, build the practice domain (``lab``, else the demo's name) if it
    is not there, show the steps; the exit status of building it (the tour cannot start
    without it)."""
    from vshx.plans.plan import shell_line
    from vshx.spec.user import demo_name
    from vshx.storage.default_uri import why_default

    demo = lab or demo_name()
    session.print(f"vshx --tour on {session.uri} ({session.uri_reason or why_default()})")
    try:
        dom = session.conn.lookupByName(demo)
    except Exception:  # not there (or no connection): lab-create says what is wrong
        status = session.run_words(["lab-create", demo])
        if status != EXIT_OK:
            return status
    else:
        now = vda_stems(dom)
        if now != FRESH:  # merged or changed since it was built: the steps would not fit it
            shown = " <- ".join(now) if now else "no chain vshx can read on vda"
            session.print(
                f"The practice domain {shell_line([demo])} has {shown}, not the fresh lab's "
                f"{' <- '.join(FRESH)} the tour's steps use.\n"
                f"Rebuild it to take the tour: lab-create {shell_line([demo])}   (its files "
                "start afresh)\nType help for every command, exit or Ctrl-D to leave."
            )
            return EXIT_OK
    session.print(TOUR.format(demo=shell_line([demo])))
    return EXIT_OK


def vda_stems(dom: libvirt.virDomain) -> tuple[str, ...]:
    """The stems of the files of the domain's vda chain, base first; () where it cannot be
    read (no such disk, a file gone): the tour then says so rather than guess."""
    import libvirt

    try:
        chain = domain_chain(dom, "vda", definition=False)
    except (VshxError, libvirt.libvirtError):
        return ()
    return tuple(layer.name.removesuffix(".qcow2") for layer in reversed(chain.layers))
