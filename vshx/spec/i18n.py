"""vshx's own words in the user's language: gettext, domain ``vshx``, catalogs in vshx/i18n/.

What goes through it: the reasons ``--teach`` and ``explain`` print under each step (why each
flag, the libvirt call and the QMP beneath it, vshx/plans/underneath.py).  English is the
source text; ``LANG=zh_CN.UTF-8`` (or ``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``, as gettext
reads them) shows Simplified Chinese.  A message with no translation is shown as written.
The catalogs are made from the ``.po`` files with ``msgfmt`` (scripts/lesson_messages.py
lists the messages for translators).
"""

from __future__ import annotations

import functools
import gettext
import os
from collections.abc import Callable

DOMAIN = "vshx"
LOCALE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "i18n")


@functools.cache
def catalogue(domain: str, locale: str) -> gettext.NullTranslations:
    """The catalog of a message domain whose ``LANG/LC_MESSAGES`` folders are in ``locale``."""
    return gettext.translation(domain, locale, fallback=True)


def catalog() -> gettext.NullTranslations:
    return catalogue(DOMAIN, LOCALE)


def _(message: str) -> str:
    """``message`` in the user's language (itself when there is no translation)."""
    return catalog().gettext(message)


def translator(domain: str, locale: str) -> Callable[[str], str]:
    """The ``_`` of another message domain: a plugin's own catalogs (the lessons')."""

    def translate(message: str) -> str:
        return catalogue(domain, locale).gettext(message)

    return translate


def N_(message: str) -> str:
    """Mark a message for translation where it is declared; translated where it is shown."""
    return message
