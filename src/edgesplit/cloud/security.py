"""Authentication as a FastAPI dependency of the whole app: every route is authenticated unless
it is named in ``PUBLIC_ROUTES``, so a new route cannot forget it."""

from __future__ import annotations

import hmac
import time

from fastapi import Request
from pydantic import SecretStr

from edgesplit.cloud.metrics import route_of
from edgesplit.cloud.settings import ServerSettings
from edgesplit.cloud.state import cloud_state
from edgesplit.errors import Unauthorized
from edgesplit.wire.auth import DIGEST_HEADER, HmacVerifier, read_keys

# Liveness and readiness stay open: load balancers and the edge's ping carry no credential.
PUBLIC_ROUTES = frozenset({"/v2/health/live", "/v2/health/ready"})


class Authenticator:
    """Open when no credential is configured; else a valid bearer token or HMAC signature."""

    def __init__(self, token: SecretStr | None, verifier: HmacVerifier | None) -> None:
        self.token = token
        self.verifier = verifier

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> Authenticator:
        verifier = (HmacVerifier(read_keys(settings.hmac_keys), max_skew_s=settings.max_skew_s)
                    if settings.hmac_keys else None)
        return cls(settings.token, verifier)

    @property
    def open(self) -> bool:
        return self.token is None and self.verifier is None

    async def check(self, request: Request, *, spend_nonce: bool = True) -> None:
        """Refuse ``request`` unless its credential is good (see ``verify_headers`` for
        ``spend_nonce``)."""
        if self.open:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if self.token is not None and scheme.lower() == "bearer":
            expected = self.token.get_secret_value()
            if hmac.compare_digest(given.strip().encode(), expected.encode()):
                return
            raise Unauthorized("wrong bearer token")
        if self.verifier is not None:
            # The whole signature, before a byte of the body is read: it covers the digest the
            # request declares, and the body readers (body.py) hold the body to that digest.
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            self.verifier.verify_headers(request.method, path, request.headers, time.time(),
                                         spend_nonce=spend_nonce)
            request.state.body_digest = request.headers[DIGEST_HEADER]
            return
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")


async def authenticate(request: Request) -> None:
    """The app-wide dependency: the request's credential, unless its route is public."""
    if route_of(request.scope) not in PUBLIC_ROUTES:
        await cloud_state(request).auth.check(request)
