"""``/api/v1/tokens``: API tokens, for admin tokens only. List, create (the token is in the answer, once), revoke.

The same rules and audit entries as ``payhub tokens create|list|revoke``: a token made here is ``created_by`` the
admin token that made it (``token:<name>``).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from payhub import tokens
from payhub.clock import utcnow
from payhub.errors import InvalidRecord
from payhub.http.auth import require
from payhub.http.models import Detail, Invalid, Refused
from payhub.http.state import acting, face
from payhub.tokens import Principal, Role, State

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"],
                   responses={401: {"model": Detail, "description": "No valid token."},
                              403: {"model": Detail, "description": "Not an admin token."},
                              422: {"model": Invalid, "description": "A parameter is not valid."}})
Admin = Annotated[Principal, Depends(require("admin"))]
NO_STORE = {"Cache-Control": "no-store"}


class TokenRequest(BaseModel):
    """A token to create. A field it does not have is refused: a misspelt ``expires_at`` must not make a token
    that never expires."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=f"^(?:{tokens.NAME.pattern})$", max_length=100, examples=["ci-reports"],
                      description=f"Unique, for good (a revoked token keeps its name): {tokens.NAME_RULE}.")
    role: Role = Field(description="auditor: every read; operator: also actions; admin: also tokens.")
    expires_at: datetime | date | None = Field(
        None, examples=["2027-01-31T18:00:00Z", "2027-01-31"],
        description="When it stops working, in the future: an ISO 8601 date-time with an offset, or a date "
                    "(valid to the end of that day, UTC). None: until revoked.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        try:
            tokens.check_name(value)
        except InvalidRecord as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("expires_at", mode="before")
    @classmethod
    def _expiry(cls, value: Any) -> datetime | None:
        if value is None:
            return None
        try:
            return tokens.parse_expiry(value) if isinstance(value, str) else tokens.parse_expiry(str(value))
        except InvalidRecord as exc:
            raise ValueError(str(exc)) from None


class TokenCreated(BaseModel):
    """A new token. ``token`` is shown this once: payhub keeps only its SHA-256."""

    token: str
    name: str
    role: Role
    expires_at: datetime | None


class TokenOut(BaseModel):
    """A token as listed: never its secret or hash."""

    name: str
    role: str
    state: State
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None = Field(description="Recorded at most once a minute.")


class TokenList(BaseModel):
    """Every token, oldest first."""

    items: list[TokenOut]


@router.get("", summary="List the API tokens", response_model=TokenList)
def list_tokens(request: Request, _admin: Admin) -> TokenList:
    """Every token with its role, state (``active``, ``expired``, ``revoked``), creator, expiry and last use."""
    with face(request).rt.engine.connect() as conn:
        found = tokens.listed(conn)
    now = utcnow()
    return TokenList(items=[TokenOut.model_validate(info.shown(now)) for info in found])


@router.post("", status_code=201, summary="Create an API token", response_model=TokenCreated,
             responses={409: {"model": Refused, "description": "A token (perhaps revoked) has this name already."}})
def create_token(request: Request, response: Response, body: TokenRequest, admin: Admin) -> TokenCreated:
    """Create a token and answer it once (``Cache-Control: no-store``); audited as ``token.created``."""
    expires_at = body.expires_at if isinstance(body.expires_at, datetime) else None  # a date became one
    token = tokens.create(acting(request, admin), body.name, body.role, expires_at)
    response.headers.update(NO_STORE)
    return TokenCreated(token=token, name=body.name, role=body.role, expires_at=expires_at)


@router.delete("/{name}", summary="Revoke an API token", response_model=TokenOut,
               responses={404: {"model": Detail, "description": "No token has this name."},
                          409: {"model": Refused, "description": "The token is revoked already."}})
def revoke_token(request: Request, name: Annotated[str, Path(max_length=100)], admin: Admin) -> TokenOut:
    """Revoke a token at once: its next request is refused. Audited as ``token.revoked``."""
    try:
        info = tokens.revoke(acting(request, admin), name)
    except tokens.TokenNotFound as exc:
        request.state.refusal = str(exc)
        raise HTTPException(404, str(exc)) from None
    return TokenOut.model_validate(info.shown(utcnow()))
