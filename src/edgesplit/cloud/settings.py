"""The cloud's settings: one object, also read from ``EDGESPLIT_...`` variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from edgesplit.core import zoo


class ServerSettings(BaseSettings):
    """What the app needs; each can also come from an ``EDGESPLIT_...`` variable (where to
    listen and TLS are uvicorn's business: ``edgesplit cloud serve`` passes them there)."""

    model_config = SettingsConfigDict(env_prefix="EDGESPLIT_", extra="ignore")

    models: list[str] = list(zoo.MODELS)
    token: SecretStr | None = None  # accept "Authorization: Bearer <token>"
    hmac_keys: Path | None = None  # accept requests signed with a key in this file
    max_skew_s: float = Field(default=30.0, gt=0)  # signed timestamps, either way
    max_body_mb: float = Field(default=64.0, gt=0)
    workers: int = Field(default=2, ge=1)  # threads running tails at once
    torch_threads: int = Field(default=1, ge=1)
    max_pending: int = Field(default=32, ge=1)  # running + waiting; more get 503
    max_batch: int = Field(default=16, ge=1)  # largest batch dimension accepted
    body_timeout_s: float = Field(default=30.0, gt=0)  # a body trickling in slower is cut off

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)
