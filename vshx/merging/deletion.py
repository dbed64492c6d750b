"""Deleting merged-away files: only those nothing else uses, looked at again before each unlink."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.merging import preflight
from vshx.merging.savedstate import refuse_internal_snapshots
from vshx.plans.plan import Step
from vshx.storage import virt
from vshx.storage.chain import Chain, Layer, human_size

if TYPE_CHECKING:
    from vshx.plans.context import Context as Session


def delete_steps(session: Session, files: list[Layer], keep_users_of: Chain) -> list[Step]:
    """rm steps for merged-away files that nothing else uses (checked now, and again right
    before each unlink)."""
    steps = []
    going = {f.path for f in files}
    index = preflight.UsageIndex(session, keep_users_of, going=going)
    dom = None
    if keep_users_of.domain is not None and files:
        dom = virt.lookup_domain(session.conn, keep_users_of.domain)
    for layer in files:
        refuse_internal_snapshots(layer.path, dom, "vshx would delete that file")
        users = index.users_of(layer.path)
        if users:
            session.warn(f"keeping {layer.path}: still used by {'; '.join(users)}")
            continue
        steps.append(
            Step(
                f"delete merged-away {layer.name} ({human_size(layer.allocated)})",
                ["rm", "-f", "--", layer.path],
                action=_delete_after_looking_again(session, keep_users_of, layer, going),
            )
        )
    return steps


def _delete_after_looking_again(
    session: Session, chain: Chain, layer: Layer, going: set[str]
) -> Callable[[], None]:
    """The rm runs only if, read again right before the unlink (under the chain's lock, which
    the command took when it loaded the chain), no disk of the domain and no other domain,
    image or pool volume uses the file, and the path still names the file that was checked."""
    from vshx.storage.identity import identity

    planned = identity(layer.path)

    def action() -> None:
        from vshx.storage import host as files

        if not files.lexists(layer.path):
            return  # gone already: as rm -f
        if chain.domain is not None:
            from vshx.storage.definition import named_files
            from vshx.storage.snapshots import current_chain_files

            dom = virt.lookup_domain(session.conn, chain.domain)
            refuse_internal_snapshots(layer.path, dom, "vshx would delete that file")
            # every disk, read again: its headers, and what its definitions name
            if layer.canonical in current_chain_files(dom) | named_files(dom):
                raise VshxError(
                    f"not deleting {layer.path}: a disk or definition of {chain.domain} still "
                    "names it",
                    f"see: vshx chain {chain.domain}",
                    clean=True,
                )
        else:
            refuse_internal_snapshots(layer.path, None, "vshx would delete that file")
        index = preflight.UsageIndex(session, chain, going=going)
        users = index.users_of(layer.path)
        if users or identity(layer.path) != planned:
            why = f"still used by {'; '.join(users)}" if users else "another file is there now"
            raise VshxError(
                f"not deleting {layer.path}: {why}",
                f"nothing was deleted; look at it ({index.scanned()})",
                clean=True,
            )
        session.info(f"deleting merged-away {layer.path}")
        try:
            files.unlink(layer.path)
        except FileNotFoundError:
            pass

    return action
