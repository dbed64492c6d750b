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
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import gettext

DOMAIN = "vshx"
LOCALE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "i18n")


@functools.cache
def catalogue(domain: str, locale: str) -> gettext.NullTranslations:
    """The catalog of a message domain whose ``LANG/LC_MESSAGES`` folders are in ``locale``
    (gettext and locale load here: a command that prints no reason never pays for them)."""
    import gettext

    return gettext.translation(domain, locale, fallback=True)


def catalog() -> gettext.NullTranslations:
    return catalogue(DOMAIN, LOCALE)


@functools.cache
def source_language() -> bool:
    """True when the user's languages, read as gettext reads them, are English or C only:
    vshx's messages are written in English, so no catalog is looked for (nor gettext loaded)."""
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(variable)
        if value:
            for language in value.split(":"):
                if language in ("C", "POSIX") or language.startswith("C."):
                    return True
                if language and not language.startswith("en"):
                    return False
            return True
    return True


def _(message: str) -> str:
    """``message`` in the user's language (itself when there is no translation)."""
    return message if source_language() else catalog().gettext(message)


def translator(domain: str, locale: str) -> Callable[[str], str]:
    """The ``_`` of another message domain: a plugin's own catalogs (the lessons')."""

    def translate(message: str) -> str:
        return catalogue(domain, locale).gettext(message)

    return translate


def N_(message: str) -> str:
    """Mark a message for translation where it is declared; translated where it is shown."""
    return message
