"""OAuth 2.0 sessions for the Salesforce REST API: client credentials, JWT bearer and refresh token flows.

One :class:`TokenManager` per source holds the current session. Every request asks it for the session; it is renewed
proactively before ``issued_at + session_lifetime_seconds - refresh_margin_seconds``, and on demand when Salesforce
answers 401 ``INVALID_SESSION_ID``. Renewal is single-flight: a lock serialises it, and a thread that saw a 401 with
a session another thread has already replaced gets the new session instead of renewing again.

Refresh tokens rotated by Salesforce (Refresh Token Rotation) are written to ``token_store`` (atomically, mode 0600)
before the new session is used: the previous refresh token is already invalid, and using it again would make
Salesforce revoke the whole grant.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from payhub.api import PermanentSourceError, TransientSourceError
from payhub_salesforce.retry import RetryPolicy
from payhub_salesforce.settings import SalesforceSettings

log = logging.getLogger(__name__)

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
JWT_LIFETIME_SECONDS = 180  # Salesforce accepts an assertion whose exp is at most 3 minutes ahead
_TRANSIENT_OAUTH_ERRORS = {"rate_limit_exceeded", "server_error", "temporarily_unavailable"}


@dataclass(frozen=True)
class Session:
    """An access token and the instance it is valid for."""

    access_token: str = field(repr=False)
    instance_url: str
    issued_at: float  # epoch seconds
    refresh_at: float  # epoch seconds (local clock) after which the session is renewed before use


class TokenStore:
    """A small JSON file holding the latest refresh token, replaced atomically and readable by its owner only."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PermanentSourceError(f"cannot read the token store {self.path}: {exc}") from exc
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            raise PermanentSourceError(f"the token store {self.path} is not valid JSON ({exc}); remove it to start "
                                       "again from the refresh_token setting") from None
        return data

    def save(self, data: dict[str, Any]) -> None:
        """Write ``data`` to a new 0600 file next to the store, flush it to disk, and rename it over the store."""
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)  # mode 0600
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        try:  # make the rename itself durable
            dir_fd = os.open(directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)


class TokenManager:
    """Obtains, caches and renews the session for one source. Thread-safe; renewal is single-flight."""

    def __init__(self, settings: SalesforceSettings, http: httpx.Client, retry: RetryPolicy,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.http = http
        self.retry = retry
        self.clock = clock
        self.grants = 0  # token requests made, successful or not
        self._lock = threading.Lock()
        self._session: Session | None = None
        self._key: RSAPrivateKey | None = self._load_key() if settings.auth == "jwt_bearer" else None
        self._store = TokenStore(settings.token_store) if settings.token_store else None
        self._refresh_token: str | None = None
        self._seed_hash: str | None = None
        self._unsaved = False
        if settings.auth == "refresh_token":
            self._refresh_token = self._initial_refresh_token()

    # ------------------------------------------------------------------------------------------------ public

    def session(self) -> Session:
        """The current session, renewed first if it is missing or about to expire."""
        with self._lock:
            if self._session is None or self.clock() >= self._session.refresh_at:
                self._session = self._grant()
            self._save_pending()
            return self._session

    def renew(self, stale: Session) -> Session:
        """A session to replace ``stale`` after a 401; renews only if no other thread has replaced it already."""
        with self._lock:
            if self._session is None or self._session is stale:
                self._session = self._grant()
            self._save_pending()
            return self._session

    @property
    def token_url(self) -> str:
        return f"{self.settings.login_url}/services/oauth2/token"

    # ----------------------------------------------------------------------------------------------- grants

    def _grant(self) -> Session:
        s = self.settings
        form: dict[str, str] = {"grant_type": s.auth}
        if s.auth == "client_credentials":
            form["client_id"] = s.client_id
            form["client_secret"] = _secret(s.client_secret)
        elif s.auth == "jwt_bearer":
            form = {"grant_type": JWT_GRANT, "assertion": self.assertion()}
        else:
            form["client_id"] = s.client_id
            form["refresh_token"] = self._refresh_token or ""
            if s.client_secret is not None:
                form["client_secret"] = s.client_secret.get_secret_value()
        # A refresh_token grant that reached Salesforce may already have rotated the token: only retry it when the
        # request cannot have been processed (connection refused, 429, 503).
        cautious = s.auth == "refresh_token"
        self.grants += 1
        response = self.retry.send(lambda: self.http.post(self.token_url, data=form,
                                                          headers={"Accept": "application/json"}),
                                   f"Salesforce login ({s.auth})", cautious=cautious)
        body = _json(response)
        if response.status_code != 200:
            error = str(body.get("error") or f"HTTP {response.status_code}")
            detail = str(body.get("error_description") or "").strip()
            message = f"Salesforce login ({s.auth}) refused: {error}" + (f": {detail}" if detail else "")
            if error in _TRANSIENT_OAUTH_ERRORS or response.status_code >= 500:
                raise TransientSourceError(message)
            raise PermanentSourceError(message + " (check the connected app and the credentials in the settings)")
        access_token, instance_url = body.get("access_token"), body.get("instance_url")
        if not isinstance(access_token, str) or not isinstance(instance_url, str) or not instance_url:
            raise TransientSourceError(f"Salesforce login ({s.auth}) answered without access_token/instance_url")
        now = self.clock()
        issued = _issued_at(body.get("issued_at"), now)
        rotated = body.get("refresh_token")
        if s.auth == "refresh_token" and isinstance(rotated, str) and rotated and rotated != self._refresh_token:
            self._refresh_token = rotated
            self._unsaved = True  # saved by the caller, after the session is kept
        # Salesforce may answer with a session issued earlier: its clock runs from issued_at. An issued_at older than
        # a whole session lifetime can only be clock skew; then the session's clock runs from now.
        base = min(issued, now) if now - issued < s.session_lifetime_seconds else now
        return Session(access_token, instance_url.rstrip("/"), issued,
                       base + s.session_lifetime_seconds - s.refresh_margin_seconds)

    def assertion(self) -> str:
        """A signed JWT bearer assertion (RS256): iss = client_id, sub = username, aud = audience, exp = now + 3 min."""
        s = self.settings
        assert self._key is not None
        claims = {"iss": s.client_id, "sub": s.username, "aud": s.audience,
                  "exp": int(self.clock()) + JWT_LIFETIME_SECONDS}
        return jwt.encode(claims, self._key, algorithm="RS256")

    # ------------------------------------------------------------------------------------------ refresh tokens

    def _initial_refresh_token(self) -> str:
        seed = _secret(self.settings.refresh_token)
        self._seed_hash = hashlib.sha256(seed.encode()).hexdigest()
        data = self._store.load() if self._store else None
        if data and data.get("seed_sha256") == self._seed_hash and isinstance(data.get("refresh_token"), str):
            return str(data["refresh_token"])  # rotated since the setting was written
        return seed

    def _save_pending(self) -> None:
        if not self._unsaved or self._store is None:
            return
        try:
            self._store.save({"refresh_token": self._refresh_token, "seed_sha256": self._seed_hash,
                              "rotated_at": datetime.now(UTC).isoformat(timespec="seconds")})
        except OSError as exc:
            raise TransientSourceError(
                f"cannot write the rotated Salesforce refresh token to {self._store.path}: {exc.strerror or exc}; "
                "fix the file or directory permissions (the new token is kept in memory until then)") from None
        self._unsaved = False
        log.info("rotated Salesforce refresh token saved to %s", self._store.path)

    def _load_key(self) -> RSAPrivateKey:
        s = self.settings
        if s.private_key is not None:
            pem = s.private_key.get_secret_value().encode()
        else:
            assert s.private_key_file is not None  # the settings model requires one of them
            try:
                pem = s.private_key_file.read_bytes()
            except OSError as exc:
                raise PermanentSourceError(f"cannot read private_key_file: {exc}") from exc
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise PermanentSourceError(f"the JWT private key is not an unencrypted PEM private key: {exc}") from None
        if not isinstance(key, RSAPrivateKey):
            raise PermanentSourceError("the JWT private key must be an RSA key (Salesforce signs with RS256)")
        return key


def _secret(value: Any) -> str:
    return str(value.get_secret_value()) if value is not None else ""


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _issued_at(value: Any, default: float) -> float:
    """``issued_at`` is milliseconds since the epoch, as text."""
    try:
        return int(str(value)) / 1000
    except (TypeError, ValueError):
        return default

