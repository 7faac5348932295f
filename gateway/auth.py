"""API-key authentication for the gateway's fronts: each key names a tenant.

Contract: with auth enabled, ``ApiKeyAuthenticator.tenant_for(headers)`` reads
``authorization: Bearer KEY`` (or ``x-api-key: KEY``) and returns the key's tenant, or raises
``Unauthenticated`` with a message that never echoes the key. Keys are held only as SHA-256
digests (config may give the digest or, for development, the key itself). With auth disabled every
request is tenant ``default``. Health endpoints never call this.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import Field, model_validator

from edgecloud.config import Section
from edgecloud.errors import Unauthenticated

DEFAULT_TENANT = "default"


class ApiKeySettings(Section):
    tenant: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
    """Tenant this key acts for; tenants never share cache entries."""
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    """Hex SHA-256 of the key (preferred: the config never holds the key itself)."""
    key: str | None = Field(None, min_length=16)
    """The key in clear text (development only)."""

    @model_validator(mode="after")
    def _one_form(self) -> ApiKeySettings:
        if (self.sha256 is None) == (self.key is None):
            raise ValueError("give exactly one of sha256 or key")
        return self

    def digest(self) -> str:
        return self.sha256 or hashlib.sha256(self.key.encode()).hexdigest()


class AuthSettings(Section):
    enabled: bool = False
    """Require an API key on every route but health (gRPC ServerLive/ServerReady, /v2/health/*)."""
    keys: list[ApiKeySettings] = Field(default_factory=list)
    """Accepted keys and their tenants."""
    keys_file: Path | None = None
    """A YAML list of more keys in the same form, read at load and on reload."""

    @model_validator(mode="after")
    def _keys_when_enabled(self) -> AuthSettings:
        if self.enabled and not self.keys and self.keys_file is None:
            raise ValueError("auth is enabled but no keys are configured")
        return self


def _presented_key(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization") or headers.get("Authorization")
    if value:
        scheme, _, token = value.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return headers.get("x-api-key") or headers.get("X-API-Key")


class ApiKeyAuthenticator:
    def __init__(self, settings: AuthSettings):
        self.enabled = settings.enabled
        entries = list(settings.keys)
        if settings.keys_file is not None:
            raw = yaml.safe_load(settings.keys_file.read_text()) or []
            entries += [ApiKeySettings.model_validate(item) for item in raw]
        self._tenants = {entry.digest(): entry.tenant for entry in entries}

    def tenant_for(self, headers: Mapping[str, str]) -> str:
        if not self.enabled:
            return DEFAULT_TENANT
        key = _presented_key(headers)
        if key is None:
            raise Unauthenticated("an API key is required (authorization: Bearer KEY)")
        tenant = self._tenants.get(hashlib.sha256(key.encode()).hexdigest())
        if tenant is None:
            raise Unauthenticated("the API key is not valid")
        return tenant
