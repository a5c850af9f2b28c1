"""HubSpot request signatures, version 3 (``X-HubSpot-Signature-v3`` and ``X-HubSpot-Request-Timestamp``).

The signature is ``base64(HMAC-SHA256(client secret, method + URI + body + timestamp))`` over the UTF-8 text of the
request method, the full request URI (scheme, host, path and query, with the URL-encoded characters of
:data:`DECODED` decoded), the raw request body and the timestamp header (epoch milliseconds). A request whose
timestamp is more than five minutes old is rejected; the comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

__all__ = ["DECODED", "decode_uri", "sign_v3", "verify_v3"]

DECODED = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}
"""The URL-encoded characters that HubSpot decodes in the request URI before signing it."""

_ENCODED = re.compile("|".join(re.escape(code) for code in DECODED), re.IGNORECASE)

MAX_AGE_MS = 5 * 60 * 1000

_TIMESTAMP = re.compile(r"[0-9]{1,15}")
"""Epoch milliseconds as HubSpot sends them: ASCII digits only, at most 15 (so never a huge number)."""


def decode_uri(uri: str) -> str:
    """``uri`` with the characters HubSpot decodes before signing (``%3A`` → ``:`` …) decoded; others kept."""
    return _ENCODED.sub(lambda match: DECODED[match.group(0).upper()], uri)


def sign_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """The v3 signature of a request, as HubSpot computes it."""
    message = method.upper().encode() + decode_uri(uri).encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def verify_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str | None, signature: str | None,
              now_ms: int, max_age_ms: int = MAX_AGE_MS) -> str | None:
    """Check a request's v3 signature: None if it is valid, otherwise the reason it is not.

    ``timestamp`` must be epoch milliseconds no more than ``max_age_ms`` away from ``now_ms`` (older requests may
    be replays; requests from further ahead come from a clock that cannot be trusted).
    """
    if not signature or not timestamp:
        return "missing X-HubSpot-Signature-v3 or X-HubSpot-Request-Timestamp"
    if not _TIMESTAMP.fullmatch(timestamp):
        return "X-HubSpot-Request-Timestamp is not epoch milliseconds"
    age = now_ms - int(timestamp)
    if age > max_age_ms:
        return f"request timestamp is {age // 1000} s old (limit {max_age_ms // 1000} s)"
    if -age > max_age_ms:
        return f"request timestamp is {-age // 1000} s in the future"
    expected = sign_v3(secret, method, uri, body, timestamp)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        return "signature does not match"
    return None
