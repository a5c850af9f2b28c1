"""The settings of the ``hubspot`` source: one ``[sources.<name>]`` section with ``plugin = "hubspot"``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator

from payhub.api import PluginSettings

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_URL_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,199}")
DEFAULT_TOKEN_PATH = "/oauth/2026-03/token"
"""HubSpot's date-versioned OAuth token endpoint (the v1 endpoint ``/oauth/v1/token`` is retired on 2027-02-16)."""
MOVED_TO_HTTP = frozenset({"webhook_port", "webhook_host", "webhook_path", "webhook_max_body_bytes",
                           "webhook_read_timeout_seconds", "webhook_max_connections", "webhook_replay_cache_size"})
"""Keys of the source's former webhook listener; payhub's HTTP face (``[http]``) serves webhooks now."""


class HubSpotSettings(PluginSettings):
    """Settings of one HubSpot account. Give either ``access_token`` (a private app) or the three OAuth keys."""

    # ------------------------------------------------------------------------------------------ connection
    base_url: str = Field(
        "https://api.hubapi.com",
        description="HubSpot API root. Change it only to point at a proxy or at the test simulator.")
    access_token: SecretStr | None = Field(
        None, description="Private app access token (sent as `Authorization: Bearer`). Not with the OAuth keys.")
    client_id: str | None = Field(
        None, description="OAuth app client id, for the refresh-token grant.")
    client_secret: SecretStr | None = Field(
        None, description="OAuth app client secret: refresh-token grant, and the key of webhook signatures.")
    refresh_token: SecretStr | None = Field(
        None, description="OAuth refresh token of the installed app (from the account's install).")
    oauth_token_path: str = Field(
        DEFAULT_TOKEN_PATH,
        description="Path of HubSpot's OAuth token endpoint under base_url (refresh-token grant, form-encoded). "
                    "`/oauth/v1/token` still works until HubSpot retires it on 2027-02-16.")
    token_refresh_margin_seconds: float = Field(
        120.0, ge=0, le=1800,
        description="Refresh an OAuth access token this long before its `expires_in` runs out.")
    http_timeout_seconds: float = Field(
        20.0, gt=0, le=600, description="Timeout of every HTTP request (connect, read, write, pool).")

    # ------------------------------------------------------------------------------------------ what to read
    start_date: datetime = Field(
        description="Read deal transitions (won, reopened, lost, deleted) that happened at or after this instant "
                    "(a date means midnight UTC). Required, so that enabling the source never rewards the "
                    "account's whole history by accident.")
    pipelines: list[str] = Field(
        default_factory=list, description="Deal pipeline ids to read; empty means every pipeline.")
    won_stages: list[str] = Field(
        default_factory=list,
        description="Stage ids that count as closed-won. Empty: every stage whose pipeline metadata says "
                    '`isClosed` = "true" and `probability` = "1.0".')
    extra_properties: list[str] = Field(
        default_factory=list, description="More deal properties to read and keep as event attributes.")
    object_type: str = Field(
        "deal", min_length=1, description="The object type part of event keys (`<source>:deal:<id>:<transition>`).")
    won_event_type: str = Field("deal_won", min_length=1, description="Event type of a deal entering closed-won.")
    reversal_event_type: str = Field(
        "deal_reversed", min_length=1,
        description="Event type of a won deal that was reopened, lost or deleted (name it in a program's "
                    "`clawback_event_types`).")

    # ------------------------------------------------------------------------------------------ mapping
    company_currency: str | None = Field(
        None, description="Currency of deals without `deal_currency_code` (the account's company currency).")
    owner_payees: dict[str, str] = Field(
        default_factory=dict, description="HubSpot owner id -> payhub payee id; unmapped owners keep their id.")
    require_owner_mapping: bool = Field(
        False, description="Quarantine deals whose owner is not in `owner_payees` instead of using the owner id.")
    partner_association: str = Field(
        "primary",
        description='Which associated company is the partner: "primary" (the primary company, or the only '
                    "one), or an association label (case-insensitive) or numeric association type id.")
    partner_required: bool = Field(
        False, description="Emit no won event for deals without a partner company (reversals are always emitted).")

    # ------------------------------------------------------------------------------------------ sync
    page_size: int = Field(100, ge=1, le=200, description="Deals per search request (HubSpot allows up to 200).")
    read_chunk_size: int = Field(
        50, ge=1, le=100, description="Deals per batch read (with stage history) and per association read.")
    index_lag_seconds: float = Field(
        30.0, ge=0, le=3600,
        description="A window never ends later than the sync's start minus this (search indexing lag).")
    lookback_seconds: float = Field(
        120.0, ge=0, le=86400, description="Each new window starts this long before the previous one ended, to catch "
                                 "updates indexed late; re-read deals add nothing (dedup keys).")
    archived_sweep_seconds: float = Field(
        900.0, ge=0, le=604800,
        description="How often to list archived (deleted) deals for reversals; 0 turns the sweep off.")
    fetch_time_budget_seconds: float = Field(
        30.0, gt=0, le=3600, description="A fetch stops reading new pages after this long and says more is ready.")
    pipelines_refresh_seconds: float = Field(
        600.0, ge=0, le=86400, description="How long the pipelines (closed-won stages) are cached.")

    # ------------------------------------------------------------------------------------------ limits
    search_requests_per_second: float = Field(
        4.0, gt=0, le=1000,
        description="Client-side limit for the search endpoint (HubSpot allows 5 per second per account).")
    requests_per_second: float = Field(
        9.0, gt=0, le=1000,
        description="Client-side limit for all other requests (HubSpot's burst limit is 100-190 per 10 s).")
    max_retries: int = Field(
        5, ge=0, le=20, description="Retries of one request after 429, 5xx, timeouts and connection errors.")
    retry_initial_seconds: float = Field(
        1.0, ge=0, le=300,
        description="First backoff; doubled on each retry (with jitter) when there is no Retry-After.")
    retry_max_seconds: float = Field(16.0, ge=0, le=3600, description="Cap on one backoff.")
    max_retry_after_seconds: float = Field(
        60.0, ge=0, le=3600,
        description="A Retry-After longer than this is not waited for in the fetch: the poll ends and "
                                "the next one resumes from the stored cursor.")

    # ------------------------------------------------------------------------------------------ webhooks
    webhook_url: str | None = Field(
        None, description="The webhook target URL exactly as configured in HubSpot (https://<your host>/webhooks/"
                          "<source name>); signatures are computed over it. Default: the URL the request reached "
                          "payhub's HTTP face at.")
    webhook_secret: SecretStr | None = Field(
        None, description="Key of the v3 signatures; default `client_secret` (the app's client secret).")
    webhook_max_age_seconds: float = Field(
        300.0, gt=0, le=3600, allow_inf_nan=False,
        description="Refuse webhook requests whose X-HubSpot-Request-Timestamp is older (or further ahead) than "
                    "this (HubSpot: 5 minutes).")

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, value: Any) -> Any:
        moved = sorted(key for key in value if key in MOVED_TO_HTTP) if isinstance(value, Mapping) else []
        if moved:
            what = (f"{moved[0]} is no longer a setting" if len(moved) == 1
                    else f"{', '.join(moved)} are no longer settings")
            raise ValueError(
                f"{what} of the hubspot source: webhooks are served by payhub's HTTP face now. Set [http] listen "
                "and point HubSpot at https://<your host>/webhooks/<source name>; [http] limits body size, read "
                "time and connections, and payhub refuses replays")
        return value

    @field_validator("start_date", mode="before")
    @classmethod
    def _start(cls, value: Any) -> Any:
        if isinstance(value, date) and not isinstance(value, datetime):
            return datetime.combine(value, time(0), UTC)
        if isinstance(value, str) and len(value.strip()) == 10:
            return datetime.combine(date.fromisoformat(value.strip()), time(0), UTC)
        return value

    @field_validator("start_date")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @field_validator("company_currency")
    @classmethod
    def _currency(cls, value: str | None) -> str | None:
        if value is not None and not _CURRENCY.fullmatch(value.strip().upper()):
            raise ValueError(f"{value!r} is not an ISO 4217 currency code")
        return None if value is None else value.strip().upper()

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        """Kept exactly as written (a trailing slash too): HubSpot signs the URL it calls, character for character."""
        if value is not None and (not value.startswith(("http://", "https://")) or any(c.isspace() for c in value)):
            raise ValueError("must be the URL configured in HubSpot: http:// or https://, without spaces")
        return value

    @field_validator("access_token", "client_secret", "refresh_token", "webhook_secret")
    @classmethod
    def _not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        """An empty secret (a deploy template whose variable was not set) is a settings error: as a signing key it
        would let anyone sign webhook deliveries."""
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is empty; give the secret, or leave the key out")
        return value

    @field_validator("oauth_token_path")
    @classmethod
    def _token_path(cls, value: str) -> str:
        if not _URL_PATH.fullmatch(value):
            raise ValueError("must be a URL path: starting with /, at most 200 characters, without spaces, query "
                             "(?) or fragment (#)")
        return value

    @model_validator(mode="after")
    def _auth(self) -> HubSpotSettings:
        oauth = [name for name in ("client_id", "client_secret", "refresh_token") if getattr(self, name) is not None]
        if self.access_token is not None:
            if "refresh_token" in oauth:
                raise ValueError("give either access_token (private app) or the OAuth refresh_token, not both")
        elif len(oauth) < 3 or "refresh_token" not in oauth:
            missing = [name for name in ("client_id", "client_secret", "refresh_token") if name not in oauth]
            raise ValueError("give access_token (private app) or client_id, client_secret and refresh_token "
                             f"(OAuth app); missing: {', '.join(missing)}")
        return self

    @property
    def oauth(self) -> bool:
        """True when the source authenticates with the OAuth refresh-token grant."""
        return self.access_token is None

    @property
    def signing_secret(self) -> SecretStr | None:
        """The key of webhook v3 signatures."""
        return self.webhook_secret if self.webhook_secret is not None else self.client_secret
