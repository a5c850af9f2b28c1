"""The settings of a ``salesforce`` source section: how to log in, what to read, and how to map it to events.

Every key is documented by its ``Field`` description; ``docs/sources/salesforce.md`` has the table and examples.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from payhub.api import ConfigPath, PluginSettings

_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*$")
_OBJECT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")

OPPORTUNITY_STREAM = "Opportunity"
REOPENED_STREAM = "Opportunity.reopened"
DELETED_STREAM = "Opportunity.deleted"


def _check_field(value: str | None) -> str | None:
    if value is not None and not _FIELD.match(value):
        raise ValueError(f"{value!r} is not a Salesforce field API name (letters, digits, _; dots for relationships)")
    return value


class OpportunityMapping(PluginSettings):
    """How closed-won Opportunities become events (the ``[sources.<name>.opportunity]`` table)."""

    enabled: bool = Field(True, description="Read closed-won Opportunities.")
    where: str = Field("", description="An extra SOQL condition ANDed to the query of won deals, e.g. "
                       "\"Type = 'Partner' AND PartnerAccountId != null\". Reversals are read whatever it says.")
    event_type: str = Field("deal_won", min_length=1, description="Event type of a closed-won opportunity.")
    reversal_event_type: str = Field(
        "deal_reversed", min_length=1, description="Event type of a reversal: a won opportunity deleted, reopened or "
        "lost after it was won. List it in a program's `clawback_event_types`.")
    reversals: bool = Field(True, description="Emit reversal events (won deals deleted, through queryAll, and deals "
                            "whose stage history shows a won stage but that are no longer won), whatever `where` "
                            "says.")
    won_stages: list[str] | None = Field(
        None, description="Stage API names that count as won, for detecting reopened deals in OpportunityHistory. "
        "Default: read once from OpportunityStage (IsWon = true).")
    won_transition_field: str = Field(
        "LastStageChangeDate", description="Field whose value is part of the won transition (`won:<value>`): a deal "
        "won again with a different value is a new event, rewarded again.")
    occurred_at_field: str = Field("CloseDate", description="Date or date-time the deal was won.")
    amount_field: str = Field("Amount", description="The deal amount.")
    payee_field: str = Field("OwnerId", description="The field holding the payee id (the owner / rep).")
    partner: Literal["field", "opportunity_partner"] = Field(
        "field", description="Where the partner comes from: an Opportunity lookup field (`partner_field`), or the "
        "primary OpportunityPartner's AccountToId.")
    partner_field: str = Field("PartnerAccountId", description="The partner lookup field when `partner = \"field\"`.")
    attributes: dict[str, str] = Field(
        default_factory=lambda: {"account_id": "AccountId", "stage": "StageName"},
        description="Event attributes: attribute name = field API name.")

    check_fields = field_validator("won_transition_field", "occurred_at_field", "amount_field", "payee_field",
                              "partner_field")(_check_field)

    @field_validator("attributes")
    @classmethod
    def _attribute_fields(cls, value: dict[str, str]) -> dict[str, str]:
        for field in value.values():
            _check_field(field)
        return value


class ObjectMapping(PluginSettings):
    """One custom object (claims, registrations, certifications) read as events (an ``[[sources.<name>.objects]]``)."""

    object: str = Field(description="The sObject API name, e.g. `Deal_Registration__c`.")
    name: str | None = Field(None, description="Name of this mapping in the cursor (default: the object name); set "
                             "it when two mappings read the same object.")
    where: str = Field("", description="SOQL condition selecting the records that are events, e.g. "
                       "\"Status__c = 'Approved'\".")
    event_type: str | None = Field(None, description="A fixed event type for every record.")
    event_type_field: str | None = Field(None, description="Or: the field holding the event type.")
    event_type_values: dict[str, str] = Field(
        default_factory=dict, description="With `event_type_field`: field value = event type. Records with other "
        "values are skipped. Empty: the value itself is the event type.")
    transition_field: str | None = Field(
        None, description="A field whose value is added to the transition (`<event type>:<value>`), so that a record "
        "that goes through the same event again with a new value is a new event.")
    occurred_at_field: str = Field("CreatedDate", description="Date or date-time of the event.")
    payee_field: str = Field("OwnerId", description="The field holding the payee id.")
    partner_field: str | None = Field(None, description="The field holding the partner id.")
    amount_field: str | None = Field(None, description="The field holding the amount (none: events without amount).")
    currency_field: str | None = Field(
        None, description="The field holding the ISO currency code. Default: CurrencyIsoCode in a multi-currency "
        "org, else the source's `org_currency`.")
    attributes: dict[str, str] = Field(default_factory=dict, description="attribute name = field API name.")
    deleted_event_type: str | None = Field(
        None, description="When set, a deleted record (seen through queryAll) is a reversal event of this type, "
        "whatever `where` says.")

    check_fields = field_validator("event_type_field", "transition_field", "occurred_at_field", "payee_field",
                              "partner_field", "amount_field", "currency_field")(_check_field)

    @field_validator("object")
    @classmethod
    def _object(cls, value: str) -> str:
        if not _OBJECT.match(value):
            raise ValueError(f"{value!r} is not an sObject API name")
        return value

    @field_validator("attributes")
    @classmethod
    def _attribute_fields(cls, value: dict[str, str]) -> dict[str, str]:
        for field in value.values():
            _check_field(field)
        return value

    @model_validator(mode="after")
    def _one_event_type(self) -> ObjectMapping:
        if (self.event_type is None) == (self.event_type_field is None):
            raise ValueError(f"object {self.object}: set exactly one of event_type and event_type_field")
        return self

    @property
    def stream(self) -> str:
        return self.name or self.object

    @property
    def deleted_stream(self) -> str | None:
        """The stream of deleted records, when ``deleted_event_type`` is set."""
        return f"{self.stream}.deleted" if self.deleted_event_type else None


class SalesforceSettings(PluginSettings):
    """Settings of the ``salesforce`` source."""

    # --- login
    auth: Literal["client_credentials", "jwt_bearer", "refresh_token"] = Field(
        description="OAuth 2.0 flow: `client_credentials`, `jwt_bearer` (private key) or `refresh_token`.")
    login_url: str = Field(
        "https://login.salesforce.com", description="Where `/services/oauth2/token` is: "
        "https://login.salesforce.com, https://test.salesforce.com (sandboxes) or the org's My Domain URL "
        "(required for client_credentials).")
    client_id: str = Field(min_length=1, description="The connected app's consumer key.")
    client_secret: SecretStr | None = Field(
        None, description="The connected app's consumer secret (client_credentials; refresh_token if the app "
        "requires it).")
    username: str | None = Field(None, description="jwt_bearer: the Salesforce username the integration runs as.")
    private_key: SecretStr | None = Field(None, description="jwt_bearer: the PEM private key whose certificate is "
                                          "uploaded to the connected app.")
    private_key_file: ConfigPath | None = Field(None, description="jwt_bearer: or a file holding that PEM key.")
    jwt_audience: str | None = Field(
        None, description="jwt_bearer: the `aud` claim. Default: https://test.salesforce.com when login_url is a "
        "sandbox login, else https://login.salesforce.com.")
    refresh_token: SecretStr | None = Field(None, description="refresh_token: the initial refresh token.")
    token_store: ConfigPath | None = Field(
        None, description="refresh_token: file where rotated refresh tokens are kept (written atomically, mode "
        "0600). Required for refresh_token.")
    session_lifetime_seconds: int = Field(
        7200, ge=120, le=86400,
        description="The org's session timeout; access tokens are renewed before it runs out.")
    refresh_margin_seconds: int = Field(
        300, ge=0, le=86400, description="Renew this long before the session would expire.")
    # --- API
    api_version: str = Field("62.0", description="REST API version, e.g. `62.0`.")
    http_timeout_seconds: float = Field(20.0, gt=0, le=600, description="Timeout of every HTTP request.")
    retry_attempts: int = Field(4, ge=1, le=10, description="Attempts per request on 5xx, 429 and connection errors.")
    retry_backoff_seconds: float = Field(
        0.5, ge=0, le=300, description="First retry delay (doubles each attempt, jittered).")
    retry_backoff_max_seconds: float = Field(10.0, ge=0, le=3600, description="Longest retry delay.")
    page_size: int = Field(2000, ge=200, le=2000, description="Records per query page (Sforce-Query-Options "
                           "batchSize; Salesforce may return fewer).")
    api_budget_share: float = Field(
        0.8, gt=0, le=1, description="Stop before this share of the org's daily API requests is used "
        "(Sforce-Limit-Info), until the next poll.")
    budget_recheck_seconds: float = Field(
        300, ge=0, le=86400,
        description="While over budget, make no request for this long (then one, to read the usage).")
    fetch_time_budget_seconds: float = Field(
        30, gt=0, le=3600,
        description="Return a partial batch after this long; keep it below daemon.plugin_timeout_seconds.")
    # --- what to read
    lookback_seconds: float = Field(
        300, ge=0, le=604800,
        description="Re-read records modified this long before each sync's start (late commits, clock "
        "skew); they dedup by key.")
    modified_since: datetime | None = Field(
        None, description="First sync only: read records whose SystemModstamp is at or after this (default: all).")
    multi_currency: bool = Field(False, description="The org has multiple currencies enabled: amounts are in each "
                                 "record's CurrencyIsoCode.")
    org_currency: str | None = Field(None, description="The org's currency (ISO 4217), required unless "
                                     "multi_currency.")
    opportunity: OpportunityMapping = Field(default_factory=OpportunityMapping,
                                            description="Closed-won Opportunities.")
    objects: list[ObjectMapping] = Field(default_factory=list, description="Custom objects read as events.")

    @field_validator("api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        value = value.removeprefix("v")
        if not re.fullmatch(r"\d{2,3}\.\d", value):
            raise ValueError(f"{value!r} is not an API version like 62.0")
        return value

    @field_validator("login_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @field_validator("org_currency")
    @classmethod
    def _currency(cls, value: str | None) -> str | None:
        if value is not None and not _CURRENCY.match(value):
            raise ValueError(f"{value!r} is not an upper-case ISO 4217 code")
        return value

    @field_validator("modified_since")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone offset, e.g. 2026-01-01T00:00:00Z")
        return value.astimezone(UTC) if value is not None else None

    @model_validator(mode="after")
    def _complete(self) -> SalesforceSettings:
        needed: dict[str, list[tuple[str, object]]] = {
            "client_credentials": [("client_secret", self.client_secret)],
            "jwt_bearer": [("username", self.username), ("private_key or private_key_file",
                                                         self.private_key or self.private_key_file)],
            "refresh_token": [("refresh_token", self.refresh_token), ("token_store", self.token_store)],
        }
        names = [name for name, value in needed[self.auth] if not value]
        if names:
            raise ValueError(f"auth = {self.auth!r} needs {' and '.join(names)}")
        if self.refresh_margin_seconds >= self.session_lifetime_seconds:
            raise ValueError("refresh_margin_seconds must be below session_lifetime_seconds")
        if self.auth == "jwt_bearer" and self.private_key and self.private_key_file:
            raise ValueError("set private_key or private_key_file, not both")
        if not self.multi_currency and self.org_currency is None:
            raise ValueError("set org_currency (the org's currency, e.g. \"USD\"), or multi_currency = true")
        streams = [OPPORTUNITY_STREAM, REOPENED_STREAM, DELETED_STREAM]
        for mapping in self.objects:
            streams += [name for name in (mapping.stream, mapping.deleted_stream) if name]
        duplicates = sorted({s for s in streams if streams.count(s) > 1})
        if duplicates:
            raise ValueError(f"objects: mapping names must be unique; give `name` to: {', '.join(duplicates)}")
        if not self.opportunity.enabled and not self.objects:
            raise ValueError("nothing to read: the opportunity mapping is disabled and objects is empty")
        return self

    @property
    def audience(self) -> str:
        if self.jwt_audience:
            return self.jwt_audience
        sandbox = "test.salesforce.com" in self.login_url or ".sandbox.my.salesforce.com" in self.login_url
        return "https://test.salesforce.com" if sandbox else "https://login.salesforce.com"
