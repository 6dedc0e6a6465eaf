"""``[storage]``: how a store keeps its bytes, and where the keys that open them live."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from sisa.config.base import _field_error, _Section
from storage.crypto import parse_kek

KEK_ENV = "SISA_STORAGE__KEK"  # where every command looks for the key-encryption key


class StorageConfig(_Section):
    """Encryption at rest with crypto-shredding (docs/threat-model.md). Everything here
    but ``kek`` is recorded in the store, so every command that opens it finds its key
    store; none of it changes what training produces."""

    encryption: Literal["none", "aes-256-gcm"] = "none"
    """``aes-256-gcm``: every data artifact and checkpoint is sealed with a data key of its
    own, kept in ``key_store``; purging an artifact destroys its key, so a backup, a
    snapshot or an old object version of it can never be opened again."""
    key_store: str | None = None
    """fsspec URL of the key store: a folder or bucket apart from the store, which must
    keep no copies of what it deletes (no versioning, no object lock). Required with
    encryption. A store with a key store keeps there the key of its ID hashes (the salt),
    encrypted or not, so the store alone cannot confirm a guessed ID."""
    key_store_options: dict[str, Any] | None = None
    """fsspec options of the key store (an endpoint, a region) where they are not the
    store's own; by default a key store on the store's backend takes the store's options.
    Never credentials: these are recorded with the store (s3fs reads them from the
    environment)."""
    kek: SecretStr | None = Field(None, exclude=True)
    """The key-encryption key, 32 bytes as 64 hex characters, that wraps the data keys.
    Give it as ``SISA_STORAGE__KEK`` (or in ``kek_file``), never in a config file; it is
    never stored nor shown."""
    kek_file: str | None = None
    """A file holding the key-encryption key (64 hex characters), read by each command
    that opens the store when ``SISA_STORAGE__KEK`` is not set. Its path is recorded,
    never its content."""

    allow_versioned: bool = False
    """Train in an s3 bucket with versioning or object lock although the store is not
    encrypted: a deleted object then survives as a noncurrent version, which you remove
    yourself (a lifecycle rule). With encryption, such buckets are fine: the versions are
    sealed under destroyed keys, and purging deletes them where no lock forbids it."""

    @field_validator("kek")
    @classmethod
    def _kek_is_hex(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                parse_kek(value.get_secret_value(), "storage.kek")  # never echoes the value
            except ValueError as exc:
                raise ValueError(str(exc).removeprefix("storage.kek: ")) from None
        return value

    @field_validator("key_store_options")
    @classmethod
    def _no_credentials(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        words = ("key", "secret", "token", "password", "credential")

        def named_in(options: Any, path: str = "") -> list[str]:  # at any depth
            if not isinstance(options, dict):
                return []
            found = []
            for k, v in options.items():
                here = f"{path}{k}"
                if any(w in str(k).lower() for w in words):
                    found.append(here)
                found += named_in(v, here + ".")
            return found

        named = sorted(named_in(value or {}))
        if named:
            raise ValueError(
                f"holds {', '.join(named)}: credentials would be recorded with the store; "
                "give them through the environment (AWS_ACCESS_KEY_ID, ...)"
            )
        return value

    @model_validator(mode="after")
    def _key_store_with_encryption(self) -> StorageConfig:
        if self.encryption != "none" and not self.key_store:
            raise _field_error(
                "StorageConfig",
                ("key_store",),
                "encryption needs a key store apart from the store (an fsspec URL of "
                "another folder or bucket)",
                self.key_store,
            )
        if self.key_store is None and (self.kek_file or self.key_store_options):
            raise _field_error(
                "StorageConfig",
                ("key_store",),
                "kek_file and key_store_options go with a key store; name one, or drop them",
                self.key_store,
            )
        return self
