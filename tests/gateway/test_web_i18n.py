"""Chinese first, and no mixed pages: every message of the templates and the code is in
the zh-CN catalogue, every value of the code's enums has words, and times are said as
people say them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from drivers.kinds import KINDS
from gateway.web import labels
from gateway.web.i18n import Speech, negotiate, translations
from tests.conftest import REPO

WEB = REPO / "gateway" / "web"
SHANGHAI = ZoneInfo("Asia/Shanghai")


def extracted() -> set[str]:
    """The message ids `pybabel extract -F gateway/web/babel.cfg -k N_` finds."""
    method_map = [
        ("**/templates/**.html", "jinja2"),
        ("**.py", "python"),
    ]
    options = {"**/templates/**.html": {"trim_blocks": "true", "lstrip_blocks": "true"}}
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(WEB),
        method_map,
        options_map=options,
        keywords={"_": None, "gettext": None, "N_": None},
    ):
        found.add(message if isinstance(message, str) else message[0])
    return found


def test_every_message_has_its_chinese_and_the_catalogue_keeps_no_stale_entry() -> None:
    with (WEB / "locale/zh_CN/LC_MESSAGES/messages.po").open("rb") as po:
        catalogue = read_po(po, locale="zh_CN")
    kept = {m.id: m for m in catalogue if m.id}
    messages = extracted()
    assert len(messages) > 150
    missing = sorted(messages - kept.keys())
    assert not missing, f"not in the zh_CN catalogue (pybabel update): {missing}"
    stale = sorted(kept.keys() - messages)
    assert not stale, f"in the catalogue, in no template or module: {stale}"
    untranslated = sorted(i for i, m in kept.items() if not m.string or m.fuzzy)
    assert not untranslated, f"no Chinese yet: {untranslated}"
    # Each placeholder of the English is in the Chinese, so a value is never lost.
    for message in kept.values():
        for name in ("%(n)s", "%(s)s", "%(day)s", "%(field)s", "%(when)s", "%(device)s"):
            if name in message.id:
                assert name in message.string, message.id


def test_every_value_of_the_codes_enums_and_every_device_kind_has_words() -> None:
    for enum, table in labels.ENUM_TABLES.items():
        assert set(table) == set(enum), enum.__name__
    assert set(labels.DEVICE_KINDS) == set(KINDS)
    zh = translations("zh_CN").gettext
    for table in [*labels.ENUM_TABLES.values(), labels.DEVICE_KINDS, labels.FIELDS]:
        for words in table.values():
            assert zh(words) != words or not words.isascii(), words


@pytest.mark.parametrize(
    ("cookie", "header", "locale"),
    [
        (None, None, "zh_CN"),
        (None, "en-US,en;q=0.9", "en"),
        (None, "fr-FR,en;q=0.5", "en"),
        (None, "zh-TW,zh;q=0.9,en;q=0.8", "zh_CN"),
        (None, "fr-FR", "zh_CN"),
        (None, "en;q=0, zh;q=0.1", "zh_CN"),
        (None, "garbage;;q=x,,", "zh_CN"),
        ("en", "zh-CN", "en"),
        ("xx", "en", "en"),
    ],
)
def test_the_language_is_the_switchs_then_the_browsers_then_chinese(
    cookie: str | None, header: str | None, locale: str
) -> None:
    assert negotiate(cookie, header) == locale


def test_times_are_said_as_people_say_them_in_local_time() -> None:
    now = datetime(2026, 12, 1, 8, 0, tzinfo=SHANGHAI)
    zh, en = Speech("zh_CN", SHANGHAI, now), Speech("en", SHANGHAI, now)
    three_minutes_ago = (now - timedelta(minutes=3)).astimezone(UTC).isoformat()
    assert zh.ago(three_minutes_ago) == "3分钟前"
    assert en.ago(three_minutes_ago) == "3 minutes ago"
    assert zh.ago(now) == "刚刚" and zh.ago(None) == "\u2013"
    this_morning = datetime(2026, 11, 30, 23, 42, tzinfo=UTC)  # 07:42 in Shanghai
    assert zh.when(this_morning) == "今天 07:42" and en.when(this_morning) == "today 07:42"
    assert zh.when(datetime(2026, 11, 30, 13, 5, tzinfo=UTC)) == "昨天 21:05"
    assert zh.when(datetime(2026, 11, 28, 23, 42, tzinfo=UTC)) == "11月29日 07:42"
    assert en.day(date(2026, 11, 29)) == "Nov 29" and zh.day("2025-12-01") == "2025年12月1日"
