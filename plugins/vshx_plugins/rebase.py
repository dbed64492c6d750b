"""rebase: point an image at another backing file with ``qemu-img rebase``.

Safe mode copies the differences into the image, so its guest sees the same data.  --unsafe
(-u) rewrites only the pointer, which vshx does only after proving that the old and the new
backing show the image the same data (see vshx.merging.verify); otherwise it refuses and names the
first differing offset.  Offline only: a running domain's layers are pulled, not rebased.
"""

from __future__ import annotations

from collections.abc import Callable

from vshx.api import (
    DISK,
    FORCE,
    SCAN,
    Args,
    Chain,
    Command,
    Layer,
    Opt,
    Plan,
    Session,
    Step,
    Target,
    UsageError,
    VshxError,
    account_moments,
    as_opened,
    bitmaps,
    canonical,
    checks,
    commands_hook,
    definition_steps,
    files,
    image_chain,
    is_json_name,
    load_domain_form,
    load_target,
    preflight,
    qemuimg,
    quoted,
    refuse_saved_state,
    report_after_merge,
    underneath,
    verify,
    virt,
)


def load_image(session: Session, args: Args) -> tuple[Target, Layer, str | None]:
    """The image to rebase: a path, or --domain/--path/--top naming a shut-off domain's layer;
    a path that is a layer of one shut-off domain's disk is that domain's layer (with the plan
    note that says so), and one in several domains' chains is refused (load_domain_form)."""
    if args.domain:
        if not args.disk:
            raise UsageError("--domain needs --path DISK (and optionally --top REF)")
        dom = virt.lookup_domain(session.conn, args.domain)
        if virt.is_running(dom):
            raise VshxError(
                f"{args.domain} is running: its layers are in use by QEMU",
                f"use: pull {args.domain} {args.disk} --base REF",
            )
        target = load_target(session, args.domain, args.disk)  # locked, journal checked
        layer = target.chain.resolve(args.top) if args.top else target.chain.active
        return target, layer, None
    if not args.image:
        raise UsageError(
            "name the IMAGE to rebase (or --domain D --path DISK [--top REF])",
            "usage: rebase IMAGE --backing REF [--backing-format FMT] [-u]; see: help rebase",
        )
    target = load_target(session, args.image, None, image=True)
    preflight.refuse_if_running_user(
        session,
        target.chain.active.path,
        "name the domain and disk instead: use pull DOMAIN DISK --base REF on the running "
        "domain (vshx chain IMAGE names the domain disk that holds it)",
    )
    image = target.chain.active
    owned = load_domain_form(session, target, domain_form(image, args), any_layer=True)
    if owned is None:
        return target, image, None
    found = owned[0].chain.layer_of_file(image.path)
    assert found is not None  # load_domain_form found it there
    return owned[0], found, owned[1]


def domain_form(image: Layer, args: Args) -> Callable[[str, str, bool], list[str]]:
    """``rebase IMAGE --backing REF`` as the domain's own command."""

    def form(domain: str, disk: str, _active: bool) -> list[str]:
        words = ["vshx", "rebase", "--domain", domain, "--disk", disk, "--top", image.name]
        return [*words, "--backing", args.backing or "", *(["-u"] if args.unsafe else [])]

    return form


def resolve_backing(chain: Chain, image: Layer, ref: str) -> Layer | None:
    """The new backing: a layer of the image's chain or any image file; None to flatten."""
    if ref == "":
        return None
    try:
        found = chain.resolve(ref)
    except UsageError:
        raise  # a name of several layers: never a guess
    except VshxError:
        if not files.exists(ref):
            raise VshxError(
                f"new backing {quoted(ref)} is neither a layer of the chain nor a file",
                f"the chain is: {chain.listing()}",
            ) from None
        # another name of a layer's file (a hard link): that layer, as a symlink resolves to it
        same = chain.layer_of_file(ref)
        if same is not None:
            found = same
        else:
            info = qemuimg.info(ref)
            found = Layer(
                as_opened(ref),
                info.get("format", ""),
                position=-1,
                virtual_size=info.get("virtual-size"),
            )
    if found.position != -1 and found.position <= image.position:
        raise VshxError(
            f"{found.name} is not below {image.name} in its chain: that would make a loop",
            f"the chain (active first) is: {chain.listing()}",
        )
    if found.position == -1 and canonical(image.path) in {
        layer.canonical for layer in image_chain(found.path).layers
    }:
        raise VshxError(f"{found.name} is backed by {image.name}: that would make a loop")
    return found


def refuse_guessed_format(new: Layer, ref: str) -> None:
    """A new backing from outside the chain is taken only with --backing-format, as
    ``qemu-img rebase`` takes no backing without -F ("backing format must be specified"): its
    format would be a guess from its content.  With no image header any file reads as raw
    (/etc/passwd too), and a raw disk's guest can write a qcow2 header naming any file of the
    host as its backing or data file (atk12 F2).  A layer of the chain has its format from
    the headers above it."""
    if new.position != -1:
        return
    if new.format == "raw":
        raise VshxError(
            f"new backing {quoted(ref)} has no disk image header: qemu-img can only guess it is "
            "a raw image (any file reads as one), and the guest would see its bytes as the disk's",
            "if it is a raw disk image, say so: --backing-format raw (-F raw); qemu-img rebase "
            "takes no backing file without -F either",
        )
    raise VshxError(
        f"new backing {quoted(ref)} is outside the chain: its format ({new.format}) would be a "
        "guess from its content (a raw disk's guest can write a qcow2 header that names any "
        "file of this host)",
        f"if it is a {new.format} image, say so: --backing-format {new.format} (-F "
        f"{new.format}); qemu-img rebase takes no backing file without -F either",
    )


def refuse_contradicted_format(new: Layer, said: str) -> None:
    """A layer of the chain has its format from the header above it: a --backing-format that
    contradicts it is refused (atk13 F5: qemu-img's safe rebase compares against the layer as
    the chain opens it, then writes the other format into the header: the guest's view
    changes).  A file outside the chain has the format it is told."""
    if new.position == -1 or not new.format or said == new.format:
        return
    raise VshxError(
        f"{new.name} is a {new.format} layer of this chain (its format from the header above "
        f"it): --backing-format {said} contradicts it, and the guest would see other data",
        f"drop --backing-format, or say {new.format}",
    )


def rebased_chain(chain: Chain, image: Layer, new: Layer | None) -> Chain:
    """The chain a rebase of ``image`` onto ``new`` leaves (a file outside it: with its own)."""
    kept = chain.layers[: image.position + 1]
    if new is None:
        below = []
    elif new.position > image.position:
        below = chain.layers[new.position :]
    else:
        below = image_chain(new.path).layers
    layers = [layer._replace(position=n) for n, layer in enumerate(kept + below)]
    return Chain(layers, chain.domain, chain.disk, chain.live)


def rebase_step(
    image: Layer, new: Layer | None, fmt: str | None, unsafe: bool, keep_relative: bool
) -> Step:
    argv = ["qemu-img", "rebase"] + (["-u"] if unsafe else []) + ["-f", image.format]
    if new is None:
        argv += ["-b", ""]
        what = "no backing file (a complete image)"
    else:
        argv += ["-F", fmt or "", "-b", preflight.relative_or_absolute(new, image, keep_relative)]
        what = new.name
    how = "pointer only (verified safe)" if unsafe else "safe: copies the differences"
    return Step(
        f"rebase {image.name} onto {what}, {how}",
        argv + [image.path],
        underneath=underneath.rebase(unsafe, flatten=new is None),
    )


def prove_unsafe_is_safe(
    session: Session,
    chain: Chain,
    image: Layer,
    new: Layer | None,
    new_fmt: str | None,
    force: bool,
    plan: Plan,
) -> None:
    old = chain.below(image)
    offset = verify.first_visible_difference(
        image,
        old.path if old else None,
        old.format if old else None,
        new.path if new else None,
        new_fmt,
    )
    if offset is None:
        plan.notes.append(
            f"verified: {old.name if old else 'no backing'} and "
            f"{new.name if new else 'no backing'} show {image.name} the same data, so -u is safe"
        )
        if old is not None and new is not None and new_fmt:
            if verify.backings_identical(old.path, old.format, new.path, new_fmt):
                plan.add(
                    Step(
                        f"prove -u safe: {old.name} and {new.name} show the same data "
                        "(a difference stops the script here)",
                        verify.compare_argv(old.path, old.format, new.path, new_fmt),
                    )
                )
            else:
                plan.notes.append(
                    "the proof compared only the ranges the image does not hold itself "
                    "(throw-away overlays): no one-line equivalent, so the script trusts it"
                )
        return
    message = (
        f"unsafe rebase would change what {image.name}'s guest sees: old backing "
        f"{old.name if old else '(none)'} and new {new.name if new else '(none)'} differ "
        f"at offset {offset}"
    )
    if not force:
        raise VshxError(
            message,
            "merge the layers in between first (commit), or drop -u for a "
            "safe rebase that copies the differences",
        )
    session.warn(message + " (--force)")
    plan.notes.append(f"WARNING: forced; the guest's data changes from offset {offset}")


def cmd_rebase(session: Session, args: Args) -> None:
    if args.backing is None:
        raise UsageError(
            "missing --backing REF",
            "give the new backing file: a layer REF or a path (--backing '' flattens the image)",
        )
    target, image, note = load_image(session, args)  # locked; an interrupted one refused
    chain = target.chain
    preflight.refuse_remote_offline(session, target, session.planning_only(args))
    new = resolve_backing(chain, image, args.backing)
    fmt = args.backing_format or (new.format if new else None)
    if new is not None and not fmt:
        raise VshxError(f"unknown format of {new.path}", "give it with --backing-format FMT")
    if new is not None and not args.backing_format:
        refuse_guessed_format(new, args.backing)
    if new is not None and args.backing_format:
        refuse_contradicted_format(new, args.backing_format)
    if (
        new is not None
        and new is chain.below(image)
        and not is_json_name(image.backing or "")  # the same file, named by options: renamed
    ):
        session.nothing_to_do(
            args,
            f"{new.name} already is the backing file of {image.name} (a link to it is the "
            "same file; vshx names each layer by its own path)",
        )
        return
    plan = Plan(
        f"rebase {image.name} onto {new.name if new else 'nothing'}",
        method="offline: qemu-img rebase",
        target=target,
    )
    if note is not None:
        plan.notes.append(note)
    # a domain's disk chain through the image made it the domain's rebase or refused it
    # (load_domain_form): these users are images and pool volumes, whose chains are headers
    users = preflight.other_users(session, image.path, chain)
    if users:
        session.warn(
            f"{image.name} is also the backing file of: {'; '.join(users)}; "
            "their view stays the same, but their chain now goes through the new "
            "backing"
        )
    if args.unsafe:
        prove_unsafe_is_safe(session, chain, image, new, fmt, args.force, plan)
    else:
        stop = new.position if new is not None and new.position > 0 else len(chain.layers)
        plan.add(checks.room_for(image, chain.layers[image.position + 1 : stop]))
    data = plan.add(rebase_step(image, new, fmt, args.unsafe, args.keep_relative))
    below = new.position if new is not None and new.position > 0 else len(chain.layers)
    bitmaps.carry(plan, data, image, chain.layers[image.position + 1 : below])
    if target.dom is not None:
        plan.before, plan.after = chain, rebased_chain(chain, image, new)
        kept = {layer.canonical for layer in plan.after.layers}  # renumbered: by file
        gone = [layer for layer in chain.layers if layer.canonical not in kept]
        # a rebase writes only the image; the layers it takes out of the chain stay as they
        # are, a memory snapshot's moment there intact (as after a pull)
        refuse_saved_state(target, [image], read_only=gone)
        plan.steps += definition_steps(session, target, plan)
        account_moments(session, target, plan)
    if session.run_plan(plan, args):
        report_after_merge(session, target, args)


COMMANDS = [
    Command(
        "rebase",
        "point an image at another backing file (qemu-img rebase, safe or verified -u)",
        cmd_rebase,
        (
            Opt("image", "the image to rebase", "image", positional=True, complete="image"),
            Opt(
                "backing",
                "the new backing file: a layer REF or a path ('' flattens)",
                "ref",
                aliases=("backing-file",),
                short="b",
                complete="layer",
            ),
            Opt(
                "backing-format",
                "format of the new backing (default: its header's; a file with none: give raw)",
                "fmt",
                short="F",
                complete="format",
            ),
            Opt("unsafe", "rewrite the pointer only, after proving it changes no data", short="u"),
            Opt("domain", "a shut-off domain whose layer to rebase", "domain", complete="domain"),
            DISK._replace(help="with --domain: the disk", positional=False),
            Opt(
                "top",
                "with --domain: the layer to rebase (default: the active one)",
                "ref",
                complete="layer",
            ),
            Opt("keep-relative", "write a relative backing file name"),
            FORCE,
            SCAN,
        ),
        group="merge",
        changes=True,
        description="qemu-img rebase merges forward (up): safe mode copies into IMAGE what the "
        "old backing showed and the new one does not.",
    )
]


vshx_register_commands = commands_hook(COMMANDS)
