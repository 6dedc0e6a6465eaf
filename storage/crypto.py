"""Authenticated encryption of stored bytes: AES-256-GCM through ``cryptography``.

A sealed blob is ``MAGIC | nonce (12 bytes) | ciphertext | tag (16 bytes)``. Every blob
has a fresh random nonce, and its associated data names where it lives (the artifact's
folder and the file's name), so a blob moved to another place, or cut, fails its tag
instead of decrypting. The store's integrity checks are unchanged: the manifest's sha256
covers the stored (sealed) bytes, and the tag covers the plaintext under its key.

Keys are 32 random bytes. The key-encryption key that wraps them is written as 64 hex
characters; ``parse_kek`` reads it without ever echoing it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from storage.errors import StorageError

ALGORITHM = "aes-256-gcm"
MAGIC = b"SISA-GCM1"  # sealed bytes start with it, so an unsealed file is never decrypted
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
OVERHEAD = len(MAGIC) + NONCE_BYTES + TAG_BYTES  # bytes a sealed blob adds
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


class SealError(StorageError):
    """Sealed bytes that do not open: another key, another place, or altered bytes."""


def new_key() -> bytes:
    """A fresh random data key."""
    return secrets.token_bytes(KEY_BYTES)


def seal(key: bytes, data: bytes, where: bytes) -> bytes:
    """``data`` encrypted and authenticated under ``key``, bound to ``where``."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    _check_key(key)
    nonce = secrets.token_bytes(NONCE_BYTES)
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, bytes(data), where)


def unseal(key: bytes, blob: bytes, where: bytes, name: str) -> bytes:
    """The plaintext of ``blob``; SealError naming ``name`` if it does not open."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    _check_key(key)
    if not is_sealed(blob) or len(blob) < OVERHEAD:
        raise SealError(f"{name} is not sealed ({ALGORITHM}) although its manifest says so")
    nonce, body = blob[len(MAGIC) : len(MAGIC) + NONCE_BYTES], blob[len(MAGIC) + NONCE_BYTES :]
    try:
        return AESGCM(key).decrypt(nonce, body, where)
    except InvalidTag:
        raise SealError(
            f"{name} does not open under its key: altered bytes, or bytes moved from another place"
        ) from None


def _check_key(key: bytes) -> None:
    # AES-GCM would take a 16- or 24-byte key as well: only AES-256 is sealed with here
    if len(key) != KEY_BYTES:
        raise ValueError(f"an {ALGORITHM} key is {KEY_BYTES} bytes, not {len(key)}")


def is_sealed(blob: bytes) -> bool:
    return blob[: len(MAGIC)] == MAGIC


def parse_kek(text: str, field: str) -> bytes:
    """A key-encryption key from its 64 hex characters; ValueError naming ``field``, never
    the value."""
    text = text.strip()
    if not _HEX_KEY.fullmatch(text):
        raise ValueError(
            f"{field}: a key-encryption key is 32 bytes written as 64 hex characters "
            f"(got {len(text)} characters{'' if text.isalnum() else ', not all hex'}); "
            "make one with: python -c 'import secrets; print(secrets.token_hex(32))'"
        )
    return bytes.fromhex(text)


def kek_id(kek: bytes) -> str:
    """A public name of a key-encryption key: it tells two keys apart and reveals nothing
    of either (an HMAC under the key itself)."""
    return hmac.new(kek, b"sisa-kek-id-v1", hashlib.sha256).hexdigest()[:32]
