"""HS256 JSON Web Tokens signed with the stack's secret, for operator tools run on the stack's host.

PostgREST verifies them with the same secret; end users get theirs from `POST /rpc/login` and
pipelines from `stepledger token create`, never from here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign(claims: dict[str, object], secret: str) -> str:
    """Encode and sign `claims` as a compact HS256 JWT."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def operator_token(secret: str, role: str = "admin", client_id: str | None = None,
                   ttl_s: int = 3600) -> str:
    """A short-lived token for the stack's own tools (demo loader, benchmarks)."""
    now = int(time.time())
    claims: dict[str, object] = {"role": role, "sub": "operator", "iat": now, "exp": now + ttl_s,
                                 "jti": str(uuid.uuid4())}
    if client_id is not None:
        claims["client_id"] = client_id
    return sign(claims, secret)
