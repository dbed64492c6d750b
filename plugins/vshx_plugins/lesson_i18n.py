"""The lessons' language: English as written, or the student's (``LANG=zh_CN.UTF-8``).

Lesson texts, hints and the check's findings are gettext messages of the domain
``vshx-lessons``; the catalogs live beside this module (``locale/LANG/LC_MESSAGES``, made from
the ``.po`` files with ``msgfmt``).  A text with no translation, such as a teacher's own
lesson, is shown as written.
"""

from __future__ import annotations

import functools
import gettext
import os

DOMAIN = "vshx-lessons"
LOCALE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "locale")


@functools.cache
def catalog() -> gettext.NullTranslations:
    return gettext.translation(DOMAIN, LOCALE, fallback=True)


def _(message: str) -> str:
    """``message`` in the student's language (itself when there is no translation)."""
    return catalog().gettext(message)


def N_(message: str) -> str:
    """Mark a message for translation where it is declared; translated where it is shown."""
    return message
