"""Built-in handlers for the tools in the stock personas and the Tavus docs' examples.

- ``get_current_time(location)`` and ``convert_time_zone(time, from_zone, to_zone)``:
  real IANA time-zone data (``zoneinfo`` + the ``tzdata`` package), cities,
  zone names, common abbreviations (PST, CET, IST, JST, ...) and UTC offsets.
- ``get_current_weather(location, unit)``: asks a pluggable :class:`WeatherProvider`;
  the default one is offline and says so instead of inventing weather.
- ``resolve_customer_issue(product, issue_description, urgency)``: records a
  support ticket durably (an fsync'd JSON line in ``<data dir>/tickets.jsonl``).

Tools without a handler here (e.g. ``get_cures``) go to the client as
``conversation.tool_call`` events, as on Tavus.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from tools.registry import ToolContext, ToolError, ToolRegistry


# --------------------------------------------------------------------------- time zones

_ABBREVIATIONS = {
    "UTC": "UTC", "GMT": "Etc/GMT", "Z": "UTC",
    "PST": "America/Los_Angeles", "PDT": "America/Los_Angeles", "PT": "America/Los_Angeles",
    "MST": "America/Denver", "MDT": "America/Denver", "MT": "America/Denver",
    "CST": "America/Chicago", "CDT": "America/Chicago", "CT": "America/Chicago",
    "EST": "America/New_York", "EDT": "America/New_York", "ET": "America/New_York",
    "AKST": "America/Anchorage", "HST": "Pacific/Honolulu",
    "BST": "Europe/London", "WET": "Europe/Lisbon", "CET": "Europe/Paris", "CEST": "Europe/Paris",
    "EET": "Europe/Athens", "EEST": "Europe/Athens", "MSK": "Europe/Moscow",
    "IST": "Asia/Kolkata", "PKT": "Asia/Karachi", "SGT": "Asia/Singapore",
    "HKT": "Asia/Hong_Kong", "JST": "Asia/Tokyo", "KST": "Asia/Seoul",
    "AEST": "Australia/Sydney", "AEDT": "Australia/Sydney", "AWST": "Australia/Perth",
    "NZST": "Pacific/Auckland", "NZDT": "Pacific/Auckland", "BRT": "America/Sao_Paulo",
}
_CITY_ALIASES = {
    "new york city": "America/New_York", "nyc": "America/New_York",
    "san francisco": "America/Los_Angeles", "seattle": "America/Los_Angeles",
    "las vegas": "America/Los_Angeles", "boston": "America/New_York",
    "washington": "America/New_York", "washington dc": "America/New_York",
    "miami": "America/New_York", "atlanta": "America/New_York",
    "dallas": "America/Chicago", "houston": "America/Chicago", "austin": "America/Chicago",
    "beijing": "Asia/Shanghai", "shenzhen": "Asia/Shanghai", "mumbai": "Asia/Kolkata",
    "delhi": "Asia/Kolkata", "new delhi": "Asia/Kolkata", "bangalore": "Asia/Kolkata",
    "bengaluru": "Asia/Kolkata", "osaka": "Asia/Tokyo", "kyoto": "Asia/Tokyo",
    "munich": "Europe/Berlin", "frankfurt": "Europe/Berlin", "barcelona": "Europe/Madrid",
    "milan": "Europe/Rome", "florence": "Europe/Rome", "geneva": "Europe/Zurich",
    "ho chi minh city": "Asia/Ho_Chi_Minh", "saigon": "Asia/Ho_Chi_Minh",
    "rio de janeiro": "America/Sao_Paulo", "montreal": "America/Toronto",
    "melbourne": "Australia/Melbourne", "san diego": "America/Los_Angeles",
}
_OFFSET = re.compile(r"^(?:UTC|GMT)\s*([+-])\s*(\d{1,2})(?::?(\d{2}))?$", re.I)


@cache
def _zones_by_city() -> dict[str, str]:
    out: dict[str, str] = {}
    for key in sorted(available_timezones()):
        if key.startswith(("Etc/", "SystemV/", "US/", "posix/", "right/")) or "/" not in key:
            continue
        city = key.rsplit("/", 1)[-1].replace("_", " ").lower()
        out.setdefault(city, key)
    return out


def resolve_zone(name: str) -> tuple[str, Any]:
    """A location, IANA zone, abbreviation or UTC offset -> (label, tzinfo)."""
    raw = (name or "").strip()
    if not raw:
        raise ToolError("no location or time zone given")
    match = _OFFSET.match(raw)
    if match:
        sign = -1 if match.group(1) == "-" else 1
        delta = timedelta(hours=int(match.group(2)), minutes=int(match.group(3) or 0))
        return raw.upper(), timezone(sign * delta)
    if raw.upper() in _ABBREVIATIONS:
        key = _ABBREVIATIONS[raw.upper()]
        return key, ZoneInfo(key)
    candidates = [raw, raw.split(",")[0]]
    for candidate in candidates:
        lowered = candidate.strip().lower()
        key = _CITY_ALIASES.get(lowered)
        if key:
            return key, ZoneInfo(key)
        try:
            return candidate.strip(), ZoneInfo(candidate.strip().replace(" ", "_"))
        except (ZoneInfoNotFoundError, ValueError):
            pass
        key = _zones_by_city().get(lowered)
        if key:
            return key, ZoneInfo(key)
    raise ToolError(
        f"unknown location or time zone {raw!r}: give a city (e.g. Tokyo), an IANA zone "
        "(e.g. Europe/Paris), an abbreviation (e.g. PST) or an offset (e.g. UTC+5:30)"
    )


def _parse_time(text: str, tz) -> datetime:
    text = (text or "").strip()
    try:
        parsed = datetime.fromisoformat(text)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)
    except ValueError:
        pass
    match = re.match(r"^(\d{1,2})(?::(\d{2}))?\s*([ap]\.?m\.?)?$", text, re.I)
    if not match:
        raise ToolError(f"cannot read the time {text!r}: use HH:MM, 2:30 PM or ISO 8601")
    hour, minute = int(match.group(1)), int(match.group(2) or 0)
    meridiem = (match.group(3) or "").lower().replace(".", "")
    if meridiem:
        if not 1 <= hour <= 12:
            raise ToolError(f"cannot read the time {text!r}")
        hour = hour % 12 + (12 if meridiem == "pm" else 0)
    if hour > 23 or minute > 59:
        raise ToolError(f"cannot read the time {text!r}")
    today = datetime.now(tz)
    return today.replace(hour=hour, minute=minute, second=0, microsecond=0)


def _describe(moment: datetime, label: str) -> dict[str, Any]:
    return {
        "time_zone": label,
        "local_time": moment.strftime("%H:%M"),
        "date": moment.strftime("%Y-%m-%d"),
        "weekday": moment.strftime("%A"),
        "utc_offset": moment.strftime("%z")[:3] + ":" + moment.strftime("%z")[3:],
        "iso": moment.isoformat(timespec="minutes"),
    }


async def get_current_time(location: str) -> dict[str, Any]:
    """The current local time at ``location``."""
    label, tz = resolve_zone(location)
    return {"location": location, **_describe(datetime.now(UTC).astimezone(tz), label)}


async def convert_time_zone(time: str, from_zone: str, to_zone: str) -> dict[str, Any]:
    """``time`` in ``from_zone`` expressed in ``to_zone``."""
    from_label, from_tz = resolve_zone(from_zone)
    to_label, to_tz = resolve_zone(to_zone)
    source = _parse_time(time, from_tz)
    target = source.astimezone(to_tz)
    return {"from": _describe(source, from_label), "to": _describe(target, to_label)}


# --------------------------------------------------------------------------- weather


class WeatherProvider(Protocol):
    """Where ``get_current_weather`` gets its data."""

    async def current(self, location: str, unit: str) -> dict[str, Any]:
        """Current conditions at ``location`` in ``unit`` (celsius or fahrenheit)."""
        ...


class OfflineWeather:
    """The default provider: no weather service is reachable, and it says so."""

    async def current(self, location: str, unit: str) -> dict[str, Any]:
        return {
            "location": location,
            "available": False,
            "message": "No weather service is configured for this agent (it runs offline), "
            "so the current weather is unknown. Say so; do not guess.",
        }


# --------------------------------------------------------------------------- tickets

_ticket_lock = threading.Lock()


def record_ticket(path, ticket: dict[str, Any]) -> None:
    """Append ``ticket`` as one JSON line and fsync it (durable before we answer)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(ticket, ensure_ascii=False) + "\n"
    with _ticket_lock, open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


async def resolve_customer_issue(
    product: str, issue_description: str, urgency: str, context: ToolContext
) -> dict[str, Any]:
    """Log a support ticket for follow-up."""
    ticket = {
        "ticket_id": "T-" + secrets.token_hex(4).upper(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "conversation_id": context.conversation_id,
        "tool_call_id": context.tool_call_id,
        "product": product,
        "issue_description": issue_description,
        "urgency": urgency,
        "status": "open",
    }
    record_ticket(context.data_dir / "tickets.jsonl", ticket)
    return {"ticket_id": ticket["ticket_id"], "status": "recorded", "urgency": urgency,
            "message": "The issue is logged; the support team will follow up."}


def register_builtin(registry: ToolRegistry, weather: WeatherProvider | None = None) -> None:
    """Register every built-in handler on ``registry``."""
    provider = weather or OfflineWeather()

    async def get_current_weather(location: str, unit: str = "celsius") -> dict[str, Any]:
        return await provider.current(location, unit)

    registry.add("get_current_time", get_current_time, timeout_secs=5)
    registry.add("convert_time_zone", convert_time_zone, timeout_secs=5)
    registry.add("get_current_weather", get_current_weather, timeout_secs=10)
    registry.add("resolve_customer_issue", resolve_customer_issue, timeout_secs=10)
