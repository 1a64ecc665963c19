"""Authentication between edges and the cloud: a bearer token, or HMAC request signing.

With signing, each edge holds a key id and a secret the cloud also knows. A request carries

    X-Edgesplit-Key: <key id>
    X-Edgesplit-Timestamp: <unix seconds>
    X-Edgesplit-Nonce: <random hex>
    X-Edgesplit-Content-SHA256: hex(SHA256(body))
    X-Edgesplit-Signature: hex(HMAC-SHA256(secret, METHOD \\n PATH \\n TIMESTAMP \\n NONCE \\n
                                            hex(SHA256(body))))

The body's digest travels in a header, so the cloud checks the whole signature before it reads a
byte of the body (``verify_headers``) and only then compares the body with the digest
(``check_body``): a client without a key cannot make the cloud hold its body.

The cloud recomputes the signature, refuses timestamps further than ``max_skew_s`` from its own
clock, and remembers every (key, nonce) it accepted for as long as its timestamp could still pass,
so a captured request cannot be replayed. Pure: the clock is passed in. Secrets come from files
or the environment and are never logged or put in messages.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

from edgesplit.errors import InvalidArgument, Unauthorized

KEY_HEADER = "x-edgesplit-key"
TIMESTAMP_HEADER = "x-edgesplit-timestamp"
NONCE_HEADER = "x-edgesplit-nonce"
SIGNATURE_HEADER = "x-edgesplit-signature"
DIGEST_HEADER = "x-edgesplit-content-sha256"
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_NONCE = re.compile(r"^[0-9a-f]{16,64}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def signature(secret: bytes, method: str, path: str, timestamp: str, nonce: str,
              body: bytes) -> str:
    return digest_signature(secret, method, path, timestamp, nonce,
                            hashlib.sha256(body).hexdigest())


def digest_signature(secret: bytes, method: str, path: str, timestamp: str, nonce: str,
                     digest: str) -> str:
    """The signature of a request whose body has the SHA-256 ``digest`` (hex)."""
    message = "\n".join([method.upper(), path, timestamp, nonce, digest]).encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign_request(method: str, path: str, body: bytes, key_id: str, secret: bytes,
                 now: float) -> dict[str, str]:
    """The headers that sign one request (a fresh nonce each time)."""
    timestamp = str(int(now))
    nonce = secrets.token_hex(16)
    digest = hashlib.sha256(body).hexdigest()
    return {KEY_HEADER: key_id, TIMESTAMP_HEADER: timestamp, NONCE_HEADER: nonce,
            DIGEST_HEADER: digest,
            SIGNATURE_HEADER: digest_signature(secret, method, path, timestamp, nonce, digest)}


class NonceCache:
    """The (key, nonce) pairs seen recently, each kept until it expires; bounded in size.

    When full, the oldest entries go first; an entry dropped early could in principle be
    replayed before its timestamp expires, so the size should exceed the request rate times
    the replay window (100,000 by default: over 1,600 requests a second for a 60 s window).
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._expiry: OrderedDict[tuple[str, str], float] = OrderedDict()

    def add(self, key: tuple[str, str], expires: float, now: float) -> bool:
        """Remember ``key``; False if it was already there (a replay)."""
        while self._expiry and next(iter(self._expiry.values())) <= now:
            self._expiry.popitem(last=False)
        if key in self._expiry:
            return False
        if len(self._expiry) >= self.max_entries:
            self._expiry.popitem(last=False)
        self._expiry[key] = expires
        return True

    def __len__(self) -> int:
        return len(self._expiry)


class HmacVerifier:
    """Checks signed requests against a table of key ids and secrets."""

    def __init__(self, keys: Mapping[str, bytes], *, max_skew_s: float = 30.0,
                 nonces: NonceCache | None = None) -> None:
        if not keys:
            raise InvalidArgument("HMAC signing needs at least one key")
        if max_skew_s <= 0:
            raise InvalidArgument("the allowed clock skew must be positive")
        self.keys = dict(keys)
        self.max_skew_s = max_skew_s
        self.nonces = nonces if nonces is not None else NonceCache()

    def check_headers(self, headers: Mapping[str, str], now: float) -> None:
        """What can be checked before reading the body: present, well formed, fresh, a known
        key. Refusing here keeps unauthenticated clients from making the server buffer bodies."""
        key_id = headers.get(KEY_HEADER, "")
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        nonce = headers.get(NONCE_HEADER, "")
        digest = headers.get(DIGEST_HEADER, "")
        if not (key_id and timestamp and nonce and digest and headers.get(SIGNATURE_HEADER)):
            raise Unauthorized(
                "missing request signature: send the X-Edgesplit-Key, -Timestamp, -Nonce, "
                "-Content-SHA256 and -Signature headers (edgesplit edge run "
                "--hmac-key-id/--hmac-key-file)")
        if not (_TIMESTAMP.match(timestamp) and _NONCE.match(nonce) and _DIGEST.match(digest)):
            raise Unauthorized("malformed signature headers")
        skew = abs(now - int(timestamp))
        if skew > self.max_skew_s:
            raise Unauthorized(
                f"request timestamp is {skew:.0f} s from the server's clock (at most "
                f"{self.max_skew_s:g} s allowed): check the edge's clock")
        if not (_KEY_ID.match(key_id) and key_id in self.keys):
            raise Unauthorized("bad request signature")  # the same answer as a wrong secret

    def verify_headers(self, method: str, path: str, headers: Mapping[str, str],
                       now: float, *, spend_nonce: bool = True) -> str:
        """The key id of a correctly signed, fresh, first-seen request, checked before its body
        (against the digest it declares); else ``Unauthorized``. Uses up the nonce, unless
        ``spend_nonce`` is false: a guard in front (the Ray backend's) checks the signature
        before it reads a body and leaves the nonce to the replica that verifies it again."""
        self.check_headers(headers, now)
        key_id, timestamp = headers[KEY_HEADER], headers[TIMESTAMP_HEADER]
        nonce = headers[NONCE_HEADER]
        expected = digest_signature(self.keys[key_id], method, path, timestamp, nonce,
                                    headers[DIGEST_HEADER])
        if not hmac.compare_digest(headers[SIGNATURE_HEADER].encode(), expected.encode()):
            raise Unauthorized("bad request signature")
        if spend_nonce and not self.nonces.add((key_id, nonce), int(timestamp) + self.max_skew_s,
                                               now):
            raise Unauthorized("replayed request: this nonce was already used")
        return key_id

    def verify(self, method: str, path: str, headers: Mapping[str, str], body: bytes,
               now: float) -> str:
        """``verify_headers``, then ``check_body``: a whole request at once."""
        key_id = self.verify_headers(method, path, headers, now)
        check_body(headers[DIGEST_HEADER], hashlib.sha256(body).hexdigest())
        return key_id


def check_body(declared: str, actual: str) -> None:
    """A body whose SHA-256 (hex) is not the one its signature covers is refused."""
    if not hmac.compare_digest(declared.encode(), actual.encode()):
        raise Unauthorized("bad request signature: the body does not match its "
                           "X-Edgesplit-Content-SHA256")


def read_secret(path: Path) -> str:
    """A secret from a file (its first line, stripped); never echoed in errors."""
    try:
        text = Path(path).read_text().strip().splitlines()
    except OSError as exc:
        raise InvalidArgument(f"cannot read the secret file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise InvalidArgument(f"the secret file {path} is not text") from None
    if not text or not text[0].strip():
        raise InvalidArgument(f"the secret file {path} is empty")
    return text[0].strip()


def read_keys(path: Path) -> dict[str, bytes]:
    """A key table: one ``<key id> <secret>`` per line; blank lines and ``#`` comments skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise InvalidArgument(f"cannot read the key file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise InvalidArgument(f"the key file {path} is not text: expected '<key id> <secret>' "
                              "lines") from None
    keys: dict[str, bytes] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not _KEY_ID.match(parts[0]):
            raise InvalidArgument(
                f"{path}, line {number}: expected '<key id> <secret>' with a key id of letters, "
                "digits, '.', '_' or '-'")
        keys[parts[0]] = parts[1].encode()
    if not keys:
        raise InvalidArgument(f"the key file {path} holds no keys")
    return keys


def secret_from(value: str | None, path: Path | None, env: str) -> str | None:
    """A secret given inline, in a file, or in the environment variable ``env``, in that order."""
    if value:
        return value
    if path is not None:
        return read_secret(path)
    return os.environ.get(env) or None
