"""Ed25519 keys for signed audit checkpoints (``cryptography``): parse, sign, check.

A private key is given as PEM (PKCS#8, what ``openssl genpkey -algorithm ed25519`` writes) or as the base64 of its
32-byte seed; a public key as PEM (``openssl pkey -pubout``) or the base64 of its 32 bytes. Signing needs the
private key; checking needs only the public key, so a verifying host never holds anything that can sign.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # cryptography is imported by the functions that use a key: only where one is configured
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class BadKey(ValueError):
    """A key that cannot be used. The message never contains the key itself."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A checkpoint key: always the public half, the private half only where checkpoints are signed."""

    public: Ed25519PublicKey
    private: Ed25519PrivateKey | None = None

    @property
    def key_id(self) -> str:
        """16 hex digits naming the key pair (from its public key), recorded with each checkpoint."""
        return hashlib.sha256(public_bytes(self.public)).hexdigest()[:16]

    @property
    def public_text(self) -> str:
        """The public key as base64, the form ``audit.checkpoint_public_key`` takes."""
        return base64.b64encode(public_bytes(self.public)).decode()

    def sign(self, message: bytes) -> str:
        """The base64 signature of ``message``; raises BadKey when only the public key is known."""
        if self.private is None:
            raise BadKey("only the public checkpoint key is configured; signing needs the private key")
        return base64.b64encode(self.private.sign(message)).decode()

    def check(self, message: bytes, signature: str) -> bool:
        """True when ``signature`` (base64) is this key's signature of ``message``."""
        from cryptography.exceptions import InvalidSignature

        try:
            raw = base64.b64decode(signature, validate=True)
            self.public.verify(raw, message)
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True


def public_bytes(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def new_private_key() -> tuple[str, SigningKey]:
    """A fresh key pair: (PEM text of the private key, the key)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    return pem, SigningKey(private.public_key(), private)


def parse_private(text: str) -> SigningKey:
    """A signing key from PEM (PKCS#8, unencrypted) or base64 of the 32-byte seed."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise BadKey(f"not a readable unencrypted PEM private key ({type(exc).__name__})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise BadKey(f"a {type(key).__name__.lstrip('_')}, not an Ed25519 private key")
        return SigningKey(key.public_key(), key)
    private = Ed25519PrivateKey.from_private_bytes(_raw32(text, "private key"))
    return SigningKey(private.public_key(), private)


def parse_public(text: str) -> SigningKey:
    """A checking-only key from PEM or base64 of the 32 raw bytes."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = load_pem_public_key(text.encode())
        except ValueError as exc:
            raise BadKey(f"not a readable PEM public key ({type(exc).__name__})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise BadKey(f"a {type(key).__name__.lstrip('_')}, not an Ed25519 public key")
        return SigningKey(key)
    return SigningKey(Ed25519PublicKey.from_public_bytes(_raw32(text, "public key")))


def _raw32(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadKey(f"not PEM and not base64: an Ed25519 {what} is PEM or the base64 of 32 bytes") from None
    if len(raw) != 32:
        raise BadKey(f"base64 of {len(raw)} bytes; an Ed25519 {what} is 32 bytes")
    return raw
