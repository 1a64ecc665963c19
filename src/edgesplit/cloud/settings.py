"""The cloud's configuration: one source for every setting, its default, bounds and help.

``ServerSettings`` is read from keyword arguments, else ``EDGESPLIT_<NAME>`` variables, else its
defaults. ``edgesplit cloud serve`` makes one option per field from it (``--max-pending`` from
``max_pending``, help from the description), passing on only what was given, so no default is
written twice. Model names are checked against the zoo's registry.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import DirectoryPath, Field, FilePath, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from edgesplit.cloud.device import check_device
from edgesplit.core import zoo
from edgesplit.models.names import check_source


class ServerSettings(BaseSettings):
    """What ``edgesplit cloud serve`` and ``create_app`` are configured with."""

    model_config = SettingsConfigDict(env_prefix="EDGESPLIT_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address to bind.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port to listen on.")
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=zoo.model_names,
        description="Models to load, comma-separated: zoo names, torch.export program files "
        "(.pt2, served under the file's stem) or Python factories (package.module:function).")
    model_repository: DirectoryPath | None = Field(
        default=None, description="Serve the models in this directory (DIR/<name>/<version>/"
        "model.pt2, optional DIR/<name>/config.toml), checked for changes while serving; "
        "with it, --models only if given.")
    repository_poll_s: float = Field(
        default=5.0, gt=0, description="Seconds between checks of --model-repository for "
        "added, changed and removed models.")
    token: SecretStr | None = Field(default=None, description="Accept this bearer token.")
    token_file: Path | None = Field(default=None,
                                    description="Read the bearer token from this file.")
    hmac_keys: Path | None = Field(
        default=None,
        description="Accept requests signed with a key in this file ('<key id> <secret>' lines).")
    max_skew_s: float = Field(default=30.0, gt=0,
                              description="Largest clock difference allowed in signed requests.")
    allow_unauthenticated: bool = Field(
        default=False,
        description="Serve on a non-loopback address without a token or keys (not advised).")
    tls_cert: FilePath | None = Field(default=None,
                                      description="Serve HTTPS with this certificate (PEM).")
    tls_key: FilePath | None = Field(default=None,
                                     description="The certificate's private key (PEM).")
    max_body_mb: float = Field(default=64.0, gt=0, description="Largest request body accepted.")
    # A body must arrive within body_timeout_s plus one second per min_body_rate_kb received:
    # a deadline for the whole body (a minimum rate), not one per chunk.
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="Grace time of a request body; after it, a body slower "
        "than --min-body-rate-kb on average is cut off (408).")
    min_body_rate_kb: float = Field(
        default=16.0, gt=0, description="KiB/s a request body must average after its grace time.")
    max_bodies_mb: float = Field(
        default=256.0, gt=0, description="All request bodies held at once, server-wide; past "
        "it, 503.")
    max_json_mb: float = Field(
        default=4.0, gt=0, description="Largest JSON request (or JSON header of a binary one).")
    max_header_kb: int = Field(
        default=64, ge=1, description="Largest request line and headers (431 and the "
        "connection cut).")
    max_header_lines: int = Field(
        default=100, ge=1, description="Most header lines in one request (431 and the "
        "connection cut).")
    head_timeout_s: float = Field(
        default=10.0, gt=0, description="Time a connection has to send a whole request line "
        "and headers, from its start or from the first byte of its next request (408 and the "
        "connection closed).")
    max_connections: int | None = Field(
        default=None, ge=1, description="Connections open at once; past it the one idle longest "
        "is closed (default: the descriptor limit less an eighth of it and 128).")
    max_heads_mb: float = Field(
        default=16.0, gt=0, description="All unfinished request heads held at once, "
        "server-wide; past it, 503 and the connection closed.")
    max_batch: int = Field(default=16, ge=1,
                           description="Largest batch of tensors in one request.")
    workers: int = Field(default=1, ge=1, description="Tails run at once (threads).")
    torch_threads: int | None = Field(
        default=None, ge=1, description="torch threads per tail (default: the CPUs this "
        "server may use, shared among its workers; 1 per Ray replica).")
    max_pending: int = Field(default=32, ge=1,
                             description="Requests running or waiting before the server "
                             "answers 503.")
    max_batch_size: int = Field(
        default=8, ge=1, description="Run tails of the same model and split point that queue "
        "together as one batch of up to this many rows (1: no batching).")
    batch_wait_ms: float = Field(
        default=0.0, ge=0, description="How long a request waits for batch-mates even when a "
        "worker is free (0: none; batches form only while every worker is busy).")
    device: str = Field(default="cpu", description="Where tails run: cpu, cuda or cuda:N.")
    backend: Literal["builtin", "ray"] = Field(
        default="builtin", description="Serve with uvicorn here, or as a Ray Serve deployment.")
    replicas: int | None = Field(default=None, ge=1,
                                 description="Ray: this many replicas (default 1).")
    autoscale: str | None = Field(default=None,
                                  description="Ray: autoscale between MIN:MAX replicas instead.")
    ray_address: str | None = Field(
        default=None, description="Ray: join this cluster (host:port or auto); default: start "
        "Ray here.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info",
                                                                    description="Log level.")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        return check_device(value)

    @field_validator("model_repository")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        """Absolute, so that Ray's replicas (another working directory) find it too."""
        return None if value is None else value.resolve()

    @field_validator("models", mode="before")
    @classmethod
    def _model_names(cls, value: object) -> object:
        """A comma-separated string (a flag or a variable) or a list; every one a zoo name, a
        program file that exists or a factory's entry point, and no two served under one name."""
        names = ([part.strip() for part in value.split(",") if part.strip()]
                 if isinstance(value, str) else value)
        if isinstance(names, list):
            served = [check_source(str(name)) for name in names]
            twice = {name for name in served if served.count(name) > 1}
            if twice:
                raise ValueError(f"two models would be served as {', '.join(sorted(twice))}")
        return names

    @property
    def listed_models(self) -> list[str]:
        """The ``--models`` to serve: with a model repository, only those named explicitly."""
        if self.model_repository is not None and "models" not in self.model_fields_set:
            return []
        return self.models

    @property
    def tail_threads(self) -> int:
        """``torch_threads``, or by default the CPUs this process may use over the workers (a
        batched tail is bound by reading weights: one tail on every core beats one per core,
        measured in docs/benchmarks.md), and one per Ray replica (each reserves its threads)."""
        if self.torch_threads is not None:
            return self.torch_threads
        if self.backend == "ray":
            return 1
        return max(1, len(os.sched_getaffinity(0)) // self.workers)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * MIB)

    @property
    def max_bodies_bytes(self) -> int:
        return int(self.max_bodies_mb * MIB)

    @property
    def max_json_bytes(self) -> int:
        return int(self.max_json_mb * MIB)


MIB = 1024 * 1024
