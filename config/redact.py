"""Redaction of secrets: in configuration before it is printed, in text before anyone sees it.

Two kinds of secret are hidden:

- **Known secrets**: the values of this process's configuration (environment keys,
  persona keys and headers, credentials inside URLs, credential-looking ``extra_body``
  and ``default_query`` values; see ``Settings.secrets()`` and ``AppConfig.secrets()``),
  registered with :func:`register_secrets` when a configuration is loaded or a pipeline
  is built. Every occurrence is replaced, wherever it is.
- **Credential shapes**, known or not: ``Bearer <token>`` / ``Basic <token>``, OpenAI
  style ``sk-...`` keys, JSON web tokens, the userinfo of a URL (``https://user:pass@``)
  and, in error texts and reports, the value of any ``key=value`` or ``"key": "value"``
  pair whose key names a secret (``api_key``, ``token``, ``password``, ...).

Where it is applied (each is the one place its output goes through):

- logs: ``config.logging`` (a loguru patcher: every record);
- what the WebRTC / Daily / Tavus client receives: ``pipeline.secret_fence.SecretFence``,
  the processor right before the output transport (RTVI ``error`` messages made from
  ``ErrorFrame``s, our ``system.error`` app messages, every other app message);
- callback payloads: ``conversation.callbacks.CallbackDispatcher.emit``;
- ``--check``: ``session.launch.render_check``; the text mode's "could not answer" line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

REDACTED = "***"
MIN_SECRET_CHARS = 4  # shorter values are never treated as secrets (they would hide words)

# --------------------------------------------------------------------------- secret names

# A key names a secret when one of its words is one of these (``max_tokens`` is not:
# "tokens" is not "token").
_SECRET_WORDS = {"secret", "token", "password", "passwd", "pwd", "authorization", "auth",
                 "bearer", "credential", "credentials", "apikey", "signature", "sig", "cookie"}
# ... or when its words end in "key" after one of these (or the key is just "key").
_KEY_QUALIFIERS = {"api", "access", "private", "secret", "subscription", "client", "master",
                   "account", "auth", "x", "service"}
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# Keys whose *every* value is a secret (HTTP headers may carry credentials under any name).
_ALL_VALUES_SECRET = {"headers"}


def is_secret_key(key: str) -> bool:
    """True when a mapping key (a field, a header, a query parameter) names a secret value."""
    words = [w.lower() for w in _WORDS.findall(key)]
    if any(w in _SECRET_WORDS for w in words):
        return True
    if words and words[-1] == "key":
        return len(words) == 1 or words[-2] in _KEY_QUALIFIERS
    return False


# --------------------------------------------------------------------------- credential shapes

_SCHEME_TOKEN = r"(?i:\b(?:Bearer|Basic|Token))\s+(?=[^\s]*\d)[A-Za-z0-9._~+/=\-]{6,}"
_SK_KEY = r"\bsk-[A-Za-z0-9][A-Za-z0-9_\-]{7,}"
_JWT = r"\beyJ[A-Za-z0-9_\-]{6,}\.[A-Za-z0-9_\-]{6,}\.[A-Za-z0-9_\-]{6,}"
_USERINFO = r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s/?#@\"'<>]+@"
_SHAPES = re.compile(f"(?P<scheme>{_SCHEME_TOKEN})|(?P<sk>{_SK_KEY})|(?P<jwt>{_JWT})"
                     f"|(?P<userinfo>{_USERINFO})")
# key=value (URL queries, form bodies, free text) and "key": "value" / 'key': 'value'
# (JSON bodies, Python reprs of them, as provider errors quote them).
_PAIRS = re.compile(
    r"(?P<pre>(?:^|[?&;,\s({\[]))(?P<k>[A-Za-z][\w.\-]*)=(?P<v>[^&\s#\"'<>,;)}\]]+)"
    r"|(?P<q>[\"'])(?P<qk>[\w.\-]+)(?P=q)\s*:\s*(?P<vq>[\"'])(?P<qv>(?:(?!(?P=vq)).)*)(?P=vq)"
)
_LONG_RANDOM = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9_\-]{20,}$")


def looks_like_credential(value: Any, *, loose: bool = False) -> bool:
    """True for a string shaped like a credential (``Bearer x1...``, ``sk-...``, a JWT, a URL
    with userinfo), whatever key it is under; ``loose``: also a long random-looking token (20+
    letters and digits: right for request parameters, wrong for voice or replica ids)."""
    if not isinstance(value, str) or len(value) < MIN_SECRET_CHARS:
        return False
    value = value.strip()
    shape = _SHAPES.match(value)
    if shape and (shape.end() == len(value) or shape.group("userinfo")):
        return True
    return loose and bool(_LONG_RANDOM.match(value))


def _shape(match: re.Match) -> str:
    if match.group("scheme"):
        return match.group("scheme").split(None, 1)[0] + " " + REDACTED
    if match.group("userinfo"):
        text = match.group("userinfo")
        return text[: text.index("://") + 3] + REDACTED + "@"
    return REDACTED


def _pair(match: re.Match) -> str:
    key, value = ("k", "v") if match.group("k") is not None else ("qk", "qv")
    if not is_secret_key(match.group(key)) or match.group(value) in ("", REDACTED):
        return match.group(0)
    text, start = match.group(0), match.start()
    return text[: match.start(value) - start] + REDACTED + text[match.end(value) - start:]


# --------------------------------------------------------------------------- known secrets

_known: set[str] = set()


def register_secrets(secrets: Iterable[str | None]) -> None:
    """Add values that must never be shown (values shorter than 4 characters are ignored)."""
    _known.update(s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_CHARS)


def known_secrets() -> frozenset[str]:
    """Every secret registered in this process."""
    return frozenset(_known)


def replace_secrets(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of the given secret strings (longest first)."""
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS},
                         key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_text(text: str, secrets: Iterable[str] = (), *, names: bool = True) -> str:
    """``text`` with every secret hidden: the given and the registered ones, then every
    credential shape; with ``names`` also the values of secret-named pairs (error texts,
    reports; not conversation content, where a tool argument may be called ``token``)."""
    if not text:
        return text
    text = replace_secrets(text, [*_known, *secrets])
    text = _SHAPES.sub(_shape, text)
    if names:
        text = _PAIRS.sub(_pair, text)
    return text


def redact_data(value: Any, secrets: Iterable[str] = (), *, names: bool = True) -> Any:
    """``value`` (JSON-like) with :func:`redact_text` applied to every string in it; the
    same object when nothing changed."""
    secrets = list(secrets)
    if isinstance(value, str):
        return redact_text(value, secrets, names=names)
    if isinstance(value, dict):
        out = {k: redact_data(v, secrets, names=names) for k, v in value.items()}
        return value if all(out[k] is value[k] for k in value) else out
    if isinstance(value, (list, tuple)):
        items = [redact_data(v, secrets, names=names) for v in value]
        return value if all(a is b for a, b in zip(items, value)) else type(value)(items)
    return value


# --------------------------------------------------------------------------- URLs


def url_secrets(url: str | None, *, any_query: bool = False) -> list[str]:
    """The credentials inside a URL: its userinfo, and the query values that name or look
    like a secret (``any_query``: also other long values with a digit, as a receiver's own
    callback token may be called anything)."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=False)
        found = [parts.username, parts.password]
    except ValueError:
        return []
    for key, value in query:
        if (is_secret_key(key) or looks_like_credential(value, loose=True)
                or (any_query and len(value) >= 12 and any(c.isdigit() for c in value))):
            found.append(value)
    return [s for s in found if s and len(s) >= MIN_SECRET_CHARS]


def safe_url(url: str | None) -> str:
    """``url`` fit for a log line: no userinfo, no query string (``?***`` says there was one)."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:
        return REDACTED
    tail = f"?{REDACTED}" if parts.query else ""
    return urlunsplit((parts.scheme, host, parts.path, "", "")) + tail


def redact_url(url: str | None, *, all_query: bool = False) -> str | None:
    """``url`` for a report: userinfo hidden, secret query values hidden (``all_query``: every
    query value), everything else kept."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return REDACTED
    if parts.username or parts.password:
        host = f"{REDACTED}@{host}"
    def hidden(key: str, value: str) -> bool:
        return bool(value) and (all_query or is_secret_key(key)
                                or looks_like_credential(value, loose=True))

    shown = "&".join(f"{k}={REDACTED if hidden(k, v) else v}" for k, v in query)
    return urlunsplit((parts.scheme, host, parts.path, shown, parts.fragment))


# --------------------------------------------------------------------------- configuration


def credential_values(value: Any, key: str | None = None) -> list[str]:
    """Credential values inside ``value`` (e.g. a persona's ``extra_body``): every string
    under a secret-named key, and every string shaped like a credential."""
    if isinstance(value, dict):
        out: list[str] = []
        for k, v in value.items():
            secret = isinstance(k, str) and is_secret_key(k)
            out += credential_values(v, k) if not secret else _strings(v)
        return out
    if isinstance(value, list):
        return [s for item in value for s in credential_values(item, key)]
    if isinstance(value, str) and looks_like_credential(value, loose=True):
        return [value, *_token_part(value)]
    return []


def header_secrets(headers: dict[str, str]) -> list[str]:
    """Every header value (headers may carry credentials under any name), and the token of
    ``<scheme> <token>`` values (a body may echo the token alone)."""
    out: list[str] = []
    for value in headers.values():
        if isinstance(value, str) and value:
            out += [value, *_token_part(value)]
    return out


def _token_part(value: str) -> list[str]:
    scheme, _, token = value.strip().partition(" ")
    return [token.strip()] if token.strip() and scheme.isalpha() else []


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


# Keys whose value is a URL that may carry credentials (userinfo, query tokens).
_URL_KEYS = {"base_url": False, "callback_url": True, "webhook_url": True}


def redact(value: Any) -> Any:
    """Return a deep copy of ``value`` with secret values replaced by ``***``: secret-named
    keys, every header, credential-looking strings, credentials inside URLs."""
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and key in _ALL_VALUES_SECRET and isinstance(item, dict):
                out[key] = {k: REDACTED if v not in (None, "") else v for k, v in item.items()}
            elif (isinstance(key, str) and is_secret_key(key) and not isinstance(item, bool)
                  and item not in (None, "", {}, [])):  # (``require_auth: true`` is no secret)
                out[key] = REDACTED
            elif isinstance(key, str) and key in _URL_KEYS and isinstance(item, str):
                out[key] = redact_url(item, all_query=_URL_KEYS[key])
            else:
                out[key] = redact(item)
        return out
    if isinstance(value, list):
        return [redact(item) for item in value]
    if looks_like_credential(value):
        return REDACTED
    return value
