"""Routes: the ways to reach one end state, what each moves and overwrites, and which is safe.

Bytes come from the allocation map of the active layer: for every extent the guest sees, the
layer (depth) that provides it, so data that several layers hold is counted once, as a job
copies it once.  vshx reads it from the qcow2 L1/L2 tables, composed top down
(``vshx.storage.allocation``), and runs ``qemu-img map --output=json`` where the tables cannot
tell (a raw base, encryption, an external data file, subclusters).  One map serves every route.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.spec.render import quoted
from vshx.storage.chain import human_size

if TYPE_CHECKING:
    from vshx.plans.context import Context as Session
    from vshx.plans.plan import Plan, Step
    from vshx.storage.chain import Chain, Layer

# what a refused commit leaves a user: the pull route, which copies instead of moving
PULL_HINT = "nothing was changed; --route pull copies what the guest sees instead and is safe"


def hidden_tail(
    going: list[Layer], base: Layer, above: list[Layer], hint: str = ""
) -> VshxError | None:
    """Why a commit of ``going`` into ``base`` can change what the guest sees, or None.

    QEMU reads zeros past the end of a layer smaller than the file below it, so such a layer
    hides the lower file's data beyond its end.  Once it is gone, the layers that stay above
    (``above``, nearest the active first; none when the base becomes the disk) read the base
    there instead: its old data resurfaces, or the disk grows to the base's size.  Sizes are
    the layers' virtual sizes; an unknown one refuses (vshx cannot prove the view stays).
    ``hint``: what to do instead (default: the pull route).
    """
    hint = hint or PULL_HINT
    unknown = [layer.name for layer in [*going, base, *above] if layer.virtual_size is None]
    if unknown:
        return VshxError(
            f"cannot read the virtual size of {', '.join(unknown)}: a commit is proven to keep "
            "the guest's view only when no layer it removes is smaller than its base",
            hint,
        )
    short = min(going, key=lambda layer: layer.virtual_size or 0)
    size, base_size = short.virtual_size or 0, base.virtual_size or 0
    seen = min([base_size, *(layer.virtual_size or 0 for layer in above)])
    if size >= seen:
        return None
    if above:
        shown = f"{above[-1].name} would read {base.name}'s old data there"
    elif (going[0].virtual_size or 0) < base_size:  # going[0]: the active layer
        shown = f"the disk would grow to {human_size(base_size)} and show {base.name}'s old data"
    else:
        shown = f"the guest would read {base.name}'s old data there"
    return VshxError(
        f"{short.name} ({human_size(size)}) is smaller than {base.name} "
        f"({human_size(base_size)}): the guest reads zeros past {human_size(size)}; "
        f"a commit removes {short.name}, and {shown}",
        hint,
    )


class Extents:
    """Where the data a layer shows lives: (depth below it, length) of every data extent.

    Read from the qcow2 tables at construction (microseconds for a small chain); where they
    cannot tell, ``qemu-img map`` runs in the background from construction on, so a command
    that builds this before its pre-flight checks gets the bytes for free; the first question
    waits for it.
    """

    def __init__(self, chain: Chain, layer: Layer | None = None) -> None:
        seen_from = layer or chain.active
        self._path = seen_from.path
        self._argv = ["qemu-img", "map", "-U", "--output=json"]
        self._argv += ["-f", seen_from.format or "qcow2", seen_from.path]
        self._extents: list[tuple[int, int]] | None = None
        from vshx.storage import host

        if (seen_from.format or "qcow2") == "qcow2" and host.current().local:
            from vshx.storage.allocation import data_extents

            self._extents = data_extents(seen_from.path)
        if self._extents is None:
            from vshx.storage import qemuimg

            self._proc = qemuimg.start(self._argv)

    @property
    def extents(self) -> list[tuple[int, int]]:
        if self._extents is None:
            from vshx.storage import qemuimg

            out = qemuimg.finish(self._proc, self._argv)
            try:
                self._extents = [
                    (int(e.get("depth", 0)), int(e["length"]))
                    for e in json.loads(out)
                    if e.get("data")
                ]
            except (ValueError, KeyError, TypeError) as exc:
                raise VshxError(f"cannot read the allocation map of {self._path}") from exc
        return self._extents

    def above(self, depth: int) -> int:
        """Bytes held by the layers above ``depth`` (what a commit into that layer copies)."""
        return sum(length for d, length in self.extents if d < depth)

    def between(self, first: int, last: int) -> int:
        """Bytes held by the layers at depths first..last (inclusive)."""
        return sum(length for d, length in self.extents if first <= d <= last)

    def total(self) -> int:
        """Every byte of data the guest sees (what a copy to a new file writes)."""
        return sum(length for _d, length in self.extents)

    def below_active(self) -> int:
        """Bytes held by every layer under the active one (what a full pull copies)."""
        return sum(length for d, length in self.extents if d > 0)


class Route:
    """One way to the end state: its cost, what it overwrites, whether it is safe and why not."""

    def __init__(
        self,
        name: str,
        summary: str,
        moves: int,
        overwrites: list[str],
        build: Callable[[], Plan],
    ) -> None:
        self.name = name
        self.summary = summary
        self.moves = moves
        self.overwrites = overwrites
        self.build = build
        self.refusal: VshxError | None = None  # why it is unsafe (None: safe)
        self.needs_force = False  # unsafe only in a way --force may override
        self.out_because = "unsafe"  # how the table words a refusal ("not asked for": copy)
        self.beside: str | None = None  # the file the moved bytes land beside (space check)
        self.grows_to = 0  # the virtual size the layer written may grow to (qcow2 on a device)
        self.image_format = ""  # that layer's format ("": read from its header)
        # the snapshots whose moments it loses where another route keeps them: a route is
        # taken over the one that keeps them only when asked for (--route)
        self.loses: list[str] = []

    def fit_beside(
        self, session: Session, path: str, grows_to: int = 0, image_format: str = ""
    ) -> None:
        """The bytes must fit where they go: unsafe now if not; checked again as a step.
        Beside a file: the file system's free space; a qcow2 on a block device: the device's
        size, against the highest offset the image may reach (``grows_to``: the virtual size
        the merge may give it)."""
        from vshx.merging import checks

        self.beside, self.grows_to, self.image_format = path, grows_to, image_format
        if self.refusal is not None:
            return
        try:
            data = checks.data_file_of(path, image_format)
            if data is not None:  # an external data file: where its bytes and the qcow2's go
                room = checks.data_file_room(path, data, self.moves, grows_to)
                self.refusal = checks.shortfall(room, path)
                return
            fits = checks.fits(path, self.moves, grows_to, image_format)
        except VshxError as exc:  # how far a qcow2 on a device may grow is unknown: unsafe
            self.refusal = exc
            return
        if not fits:
            name = os.path.basename(path)
            on_device = checks.qcow2_on_device(path, image_format)
            where = "on the block device" if on_device else "beside"
            hint = checks.DEVICE_HINT if on_device else checks.SPACE_HINT
            self.refusal = VshxError(f"{human_size(self.moves)} do not fit {where} {name}", hint)

    def first_steps(self) -> list[Step]:
        """The checks the chosen route's plan runs (and prints) before it moves anything."""
        from vshx.merging import checks

        if not self.beside:
            return []
        return [checks.space_step(self.beside, self.moves, self.grows_to, self.image_format)]

    @property
    def safe(self) -> bool:
        return self.refusal is None

    def row(self, chosen: bool) -> str:
        verdict = "safe" if self.safe else f"{self.out_because}: {self.refusal.message}"  # type: ignore[union-attr]
        if self.safe and self.loses:
            verdict += f", but loses the moments of {', '.join(self.loses)}"
        mark = "*" if chosen else " "
        files = ", ".join(self.overwrites) or "-"
        return f"{mark} {self.name:<7} {human_size(self.moves):>10}  overwrites {files}; {verdict}"


def choose(routes: list[Route], forced: str | None, force: bool) -> Route:
    """The cheapest safe route that loses no snapshot's moment another safe route keeps (a
    data-safe route may still end points in time the user can revert to: only ``--route``
    takes it then), or the forced one if it is safe (or --force covers why not)."""
    if forced is not None:
        matching = [r for r in routes if r.name == forced]
        if not matching:
            raise VshxError(
                f"no route {quoted(forced)} here", f"routes: {', '.join(r.name for r in routes)}"
            )
        route = matching[0]
        if route.refusal is not None and not (force and route.needs_force):
            raise route.refusal
        return route
    safe = [r for r in routes if r.safe]
    if len(routes) == 1 and routes[0].refusal is not None:
        raise routes[0].refusal
    if not safe:
        reasons = "; ".join(f"{r.name}: {r.refusal.message}" for r in routes if r.refusal)
        forceable = [r.name for r in routes if r.needs_force]
        hint = (
            f"see the reasons; --route {forceable[0]} --force goes ahead anyway"
            if forceable
            else "see the reasons: each must be resolved first"
        )
        raise VshxError(f"no safe route: {reasons}", hint)
    return min(safe, key=lambda r: (len(r.loses), r.moves))


def table_notes(routes: list[Route], chosen: Route) -> list[str]:
    """The candidate table as script comments: route, bytes, files overwritten, verdict."""
    lines = ["routes (* = chosen; bytes from the allocation map of the active layer):"]
    lines += [r.row(r is chosen) for r in routes]
    lines.append(
        "safe: for the guest's data; which snapshots' moments a route keeps or loses, its plan "
        "says under keeps:/loses: (--route NAME --dry-run) (a commit down loses those the "
        "files it merges away or overwrites held)"
    )
    return lines
