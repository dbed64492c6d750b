#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: the vshx authors
# MIT License, as vshx itself (SPDX-License-Identifier: MIT)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: flatten
short_description: Make a disk one file by the cheapest safe route (vshx flatten)
description:
  - Runs C(vshx flatten) on the managed host. vshx lists the routes (pull up into the active
    layer, active commit down into the base, copy into a new file) with the bytes each moves,
    drops the unsafe ones with the reason, and takes the cheapest, live or offline.
  - With O(to) it copies the whole disk into that new file and leaves every old file as it was.
  - Idempotent through vshx's own outcome. A disk that is one file already has nothing to do.
version_added: "0.1.0"
author:
  - the vshx authors
extends_documentation_fragment:
  - vshx.libvirt.vshx
  - vshx.libvirt.vshx.merge
options:
  domain:
    description:
      - The domain's name, id or uuid.
    type: str
    required: true
  disk:
    description:
      - The disk target (V(vda)) or its source file.
    type: str
    required: true
  route:
    description:
      - Take this route instead of the cheapest safe one.
    type: str
    choices: [pull, commit, copy]
  to:
    description:
      - Copy into this new file (the copy route); the old files stay.
    type: path
seealso:
  - module: vshx.libvirt.pull
  - module: vshx.libvirt.commit
"""

EXAMPLES = r"""
- name: Make vda of web one file, whichever way moves fewer bytes
  vshx.libvirt.flatten:
    domain: web
    disk: vda

- name: Copy the disk into a new file and switch the domain to it
  vshx.libvirt.flatten:
    domain: web
    disk: vda
    to: /var/lib/libvirt/images/web-flat.qcow2
"""

RETURN = r"""
msg:
  description: The plan's title, or why there was nothing to do.
  returned: always
  type: str
  sample: "flatten web vda"
plan:
  description:
    - vshx's plan as C(vshx --plan-json) prints it (docs/json/plan.schema.json), including
      C(script), the dry-run shell script, and C(keeps), its C(keeps:)/C(loses:) lines.
    - null when the module saw the end state reached before planning.
  returned: always
  type: dict
chains_before:
  description: The disk's chain before (C(vshx chain --json)'s C(chains)).
  returned: always
  type: list
  elements: dict
chains_after:
  description: The chain after the run; in check mode, the chain the plan predicts.
  returned: always
  type: list
  elements: dict
loses:
  description: The snapshots whose moments the plan loses (no file shows them afterwards).
  returned: always
  type: list
  elements: str
  sample: ["sn2", "sn3"]
stdout:
  description: What vshx printed while it ran (not in check mode).
  returned: changed and not check mode
  type: str
error:
  description: vshx's C(error:) line, when it refused or failed.
  returned: failure
  type: str
hint:
  description: vshx's C(hint:) line, when it gave one.
  returned: failure
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vshx.libvirt.plugins.module_utils.vshx import (
    COMMON_ARGS,
    JOB_ARGS,
    Vshx,
    option_words,
    run_plan,
)


def main():
    argument_spec = dict(
        COMMON_ARGS,
        domain=dict(type="str", required=True),
        disk=dict(type="str", required=True),
        route=dict(type="str", choices=["pull", "commit", "copy"]),
        to=dict(type="path"),
        **JOB_ARGS,
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    vshx = Vshx(module)
    words = ["flatten", "--domain=" + params["domain"], "--disk=" + params["disk"]]
    words += option_words(params, ["route", "to"] + sorted(JOB_ARGS))
    run_plan(module, vshx, words, params["domain"], params["disk"])


if __name__ == "__main__":
    main()
