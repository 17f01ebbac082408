"""Keep secrets out of everything we print, log or store.

Two layers: any ``scheme://user:password@`` userinfo is masked by pattern, and every
secret value we know of (passwords in the configured URLs, the service role key, the
webhook URL) is masked by value, so a library error that echoes a DSN fragment or a
key still comes out clean.
"""

from __future__ import annotations

import re
from typing import Any, overload
from urllib.parse import unquote, urlsplit

MASK = "***"
_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@"
)
_KV_PASSWORD = re.compile(r"(?i)\b(password|passwd|pwd)\s*=\s*('[^']*'|\S+)")

_known: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret value so that :func:`redact` masks it wherever it appears."""
    if value and len(value) >= 4:
        _known.add(value)


def register_url(url: str | None) -> None:
    """Register the password of a URL (and, for webhooks, the whole URL) as secret."""
    if not url:
        return
    try:
        parts = urlsplit(url)
    except ValueError:
        register_secret(url)
        return
    if parts.password:
        register_secret(parts.password)
        # libpq may report the percent-decoded form; urlsplit keeps it encoded.
        register_secret(unquote(parts.password))


def redact(text: object) -> str:
    """Return ``text`` as a string with every known or URL-embedded secret masked."""
    s = str(text)
    s = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", s)
    s = _KV_PASSWORD.sub(lambda m: f"{m.group(1)}={MASK}", s)
    for secret in sorted(_known, key=len, reverse=True):
        if secret in s:
            s = s.replace(secret, MASK)
    return s


@overload
def redact_tree(value: dict[Any, Any]) -> dict[str, object]: ...
@overload
def redact_tree(value: object) -> object: ...
def redact_tree(value: object) -> object:
    """``value`` with every string in it redacted, dicts and lists walked (keys too).

    For anything serialised to JSON: redacting the serialised text instead could cut
    through a JSON escape (a masked value next to ``\\n``) and leave a line no reader parses.
    Other leaves become their ``str()`` only if they are not JSON scalars.
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): redact_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [redact_tree(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


def safe_url(url: str) -> str:
    """A URL fit for display: password masked, query string dropped (it may carry keys)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{parts.path}"
