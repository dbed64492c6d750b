"""A Plan as one JSON document (``vshx --plan-json``): a dry run for programs.

The script is the plan for people (and for ``sh -e``); this document is the same plan for a
program such as the Ansible collection vshx.libvirt: the chains before and after, the snapshots
whose moments it keeps and loses, the steps.  Fields and types: docs/json/plan.schema.json.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vshx.spec.render import to_json
from vshx.storage.chain_view import chain_document

if TYPE_CHECKING:
    from vshx.plans.plan import Plan
    from vshx.storage.chain import Chain


def plan_document(plan: Plan, command: str | None) -> str:
    """The plan as ``--plan-json`` prints it (nothing left to do: :func:`nothing_document`)."""
    pairs: list[tuple[Chain, Chain]] = list(plan.chains)
    if not pairs and plan.before is not None and plan.after is not None:
        pairs = [(plan.before, plan.after)]
    moments = None
    if plan.verdicts is not None:
        moments = [
            {"snapshot": v.snapshot, "disk": v.disk, "moment": v.state, "holder": v.holder}
            for v in plan.verdicts
        ]
    return to_json(
        {
            "command": command,
            "nothing_to_do": None,
            "title": plan.title,
            "method": plan.method or None,
            "notes": list(plan.notes),
            "chains": [
                {"disk": old.disk, "before": chain_document(old), "after": chain_document(new)}
                for old, new in pairs
            ],
            "keeps": list(plan.keeps),
            "loses": list(plan.losing),
            "moments": moments,
            "steps": [
                {"description": s.description, "command": s.equivalent(), "changes": s.changes}
                for s in plan.steps
            ],
            "script": plan.script(),
        }
    )


def nothing_document(command: str | None, why: str) -> str:
    """A request already met, as ``--plan-json`` prints it: no steps, ``nothing_to_do`` says
    why (exit 0, as the script's ``# nothing to do:`` line)."""
    return to_json(
        {
            "command": command,
            "nothing_to_do": why,
            "title": None,
            "method": None,
            "notes": [],
            "chains": [],
            "keeps": [],
            "loses": [],
            "moments": None,
            "steps": [],
            "script": None,
        }
    )
