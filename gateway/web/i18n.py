"""The page's languages and how it says times: Chinese (zh-CN) first, English when the
browser asks for it or the technician switches.

Every message is in a gettext catalogue, `locale/<locale>/LC_MESSAGES/messages.po`, kept
with Babel (`pybabel extract -F gateway/web/babel.cfg`, then `pybabel update`); the
English text is the message id, so the English catalogue is empty. The catalogues are
compiled in memory when the page starts: no binary `.mo` file is kept beside its source.
Times are said as people say them, in the gateway's zone: "3 分钟前", "今天 07:42",
"昨天 21:05", "11月30日 07:42".

Babel (and its locale data) is loaded with the first page shown, not with the service:
a gateway whose page nobody opens never holds it in memory.
"""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from babel.support import NullTranslations

#: What a time never reached is shown as (a dash: the same in every language).
NEVER = "\u2013"
#: The page's languages, the first the default.
LOCALES = ("zh_CN", "en")
DEFAULT_LOCALE = LOCALES[0]
#: The cookie the language switch sets.
LANGUAGE_COOKIE = "bg_lang"
#: What the switch offers, each in its own language (never translated).
LANGUAGE_NAMES = {"zh_CN": "中文", "en": "English"}


@cache
def translations(locale: str) -> NullTranslations:
    """The compiled catalogue of `locale` (one of `LOCALES`)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po
    from babel.support import NullTranslations, Translations

    source = resources.files("gateway.web").joinpath(f"locale/{locale}/LC_MESSAGES/messages.po")
    if not source.is_file():
        return NullTranslations()
    with source.open("rb") as po:
        catalog = read_po(po, locale=locale)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)


def negotiate(chosen: str | None, accept_language: str | None) -> str:
    """The locale to answer in: the switch's choice (cookie), else the first language of
    the browser's `Accept-Language` that the page has, else Chinese."""
    from babel import Locale, UnknownLocaleError

    if chosen in LOCALES:
        return chosen
    preferred = []
    for part in (accept_language or "").split(","):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        if tag and tag != "*" and quality > 0:
            preferred.append((quality, tag.replace("-", "_")))
    preferred.sort(key=lambda item: -item[0])  # stable: equal weights keep their order
    for _quality, tag in preferred:
        try:
            language = Locale.parse(tag).language
        except (ValueError, UnknownLocaleError):
            continue
        match = next((loc for loc in LOCALES if Locale.parse(loc).language == language), None)
        if match is not None:
            return match
    return DEFAULT_LOCALE


class Speech:
    """How one page says times: in `locale`, in the gateway's zone, relative to `now`."""

    def __init__(self, locale: str, zone: tzinfo, now: datetime) -> None:
        self.locale = locale
        self.zone = zone
        self.now = now.astimezone(zone)
        self._ = translations(locale).gettext

    def ago(self, then: datetime | str | None) -> str:
        """'3 分钟前' / '3 minutes ago'; `NEVER` when never."""
        from babel.dates import format_timedelta

        moment = _moment(then)
        if moment is None:
            return NEVER
        elapsed = moment - self.now
        if -timedelta(seconds=10) < elapsed <= timedelta(0):
            return self._("just now")
        return format_timedelta(elapsed, add_direction=True, locale=self.locale)

    def when(self, then: datetime | str | None) -> str:
        """'今天 07:42', '昨天 21:05', '11月30日 07:42' (local time)."""
        moment = _moment(then)
        if moment is None:
            return NEVER
        local = moment.astimezone(self.zone)
        clock = local.strftime("%H:%M")
        days = (self.now.date() - local.date()).days
        if days == 0:
            return self._("today %(time)s") % {"time": clock}
        if days == 1:
            return self._("yesterday %(time)s") % {"time": clock}
        return f"{self.day(local.date())} {clock}"

    def day(self, day: date | str) -> str:
        """A local date as '12月1日' / 'Dec 1' (with the year when not this year)."""
        from babel.dates import format_skeleton

        if isinstance(day, str):
            day = date.fromisoformat(day)
        skeleton = "MMMd" if day.year == self.now.year else "yMMMd"
        return format_skeleton(skeleton, day, locale=self.locale)


def _moment(then: datetime | str | None) -> datetime | None:
    if then is None or then == "":
        return None
    if isinstance(then, str):
        then = datetime.fromisoformat(then)
    return then if then.tzinfo is not None else then.replace(tzinfo=UTC)
