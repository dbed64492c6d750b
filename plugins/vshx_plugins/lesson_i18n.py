"""The lessons' language: English as written, or the student's (``LANG=zh_CN.UTF-8``).

Lesson texts, hints and the check's findings are gettext messages of the domain
``vshx-lessons``; the catalogs live beside this module (``locale/LANG/LC_MESSAGES``, made from
the ``.po`` files with ``msgfmt``).  A text with no translation, such as a teacher's own
lesson, is shown as written.
"""

from __future__ import annotations

import os

from vshx.api import N_, translator

DOMAIN = "vshx-lessons"
LOCALE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "locale")

_ = translator(DOMAIN, LOCALE)

__all__ = ["DOMAIN", "LOCALE", "N_", "_"]
