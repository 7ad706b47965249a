"""The routing rule of route-by-currency, with no component imports (unit-tested with plain
Python: `python3 -m unittest discover -s tests`)."""

import json
import re
from dataclasses import dataclass
from typing import Optional

#: Keys that hold an event's currency, in order of preference (matched ignoring case,
#: spaces, `_` and `-`).
CURRENCY_KEYS = ("currency", "coin", "asset", "sourceCurrency")


class SettingError(Exception):
    """The plugin's settings are missing or wrong: every event fails fatally."""


def normalize_key(key: str) -> str:
    """'Source Currency' -> 'sourcecurrency'."""
    return re.sub(r"[\s_-]", "", key).lower()


def parse_currencies(setting: Optional[str]) -> frozenset:
    """'usd, USDT' -> {'USD', 'USDT'}; a missing or empty setting is a SettingError."""
    if setting is None:
        raise SettingError('setting `currencies` is required (comma-separated, e.g. "USD,USDT")')
    currencies = frozenset(c.strip().upper() for c in setting.split(",") if c.strip())
    if not currencies:
        raise SettingError("setting `currencies` lists no currency")
    return currencies


def find_currency(data: str) -> Optional[str]:
    """The event's currency, upper case, from the top level of its JSON data; None if absent."""
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    by_key = {}
    for key, value in obj.items():
        if isinstance(value, str) and value.strip():
            by_key.setdefault(normalize_key(key), value.strip().upper())
    for key in CURRENCY_KEYS:
        if normalize_key(key) in by_key:
            return by_key[normalize_key(key)]
    return None


@dataclass(frozen=True)
class Decision:
    """`currency` is set when the event passes; `drop_reason` when it is dropped."""

    currency: Optional[str] = None
    drop_reason: Optional[str] = None


def decide(currencies: frozenset, data: str) -> Decision:
    currency = find_currency(data)
    if currency is None:
        keys = ", ".join(CURRENCY_KEYS)
        return Decision(drop_reason=f"no currency in data (looked for {keys})")
    if currency not in currencies:
        return Decision(drop_reason=f"currency {currency} not routed here")
    return Decision(currency=currency)
