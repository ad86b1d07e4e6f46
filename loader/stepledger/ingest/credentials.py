"""Where a command or the SDK gets its API URL and token (`api_credentials`), and the HS256
JSON Web Tokens signed with the stack's secret for operator tools run on the stack's host.

PostgREST verifies them with the same secret; end users get theirs from `POST /rpc/login` and
pipelines from `stepledger token create`, never from here. Standard library only: the SDK's base
install uses this module.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
import uuid

from stepledger import StepledgerError
from stepledger.api_client import CLI_TOKEN_ARGUMENT
from stepledger.settings import Settings


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


def api_credentials(url: str | None = None, token: str | None = None,
                    token_argument: str = CLI_TOKEN_ARGUMENT) -> tuple[str, str]:
    """The API URL and token for a CLI command.

    URL: `url`, else STEPLEDGER_URL, else the local stack's API port. Token: `token`, else
    STEPLEDGER_TOKEN, else a short-lived operator token signed with the local stack's secret when
    that secret is readable (STEPLEDGER_JWT_SECRET or the stack's secrets file); else an error.
    """
    from stepledger.ingest.credentials import operator_token
    settings = Settings.from_env()
    url = url or os.environ.get("STEPLEDGER_URL") or settings.api_url
    token = token or os.environ.get("STEPLEDGER_TOKEN")
    if token:
        return url, token
    secret_file = settings.secrets_dir / "jwt_secret"
    try:
        secret = settings.existing_secret("jwt_secret")
    except OSError:
        secret = None
    if not secret:
        raise StepledgerError(
            f"no API token: pass {token_argument} or set STEPLEDGER_TOKEN (create one with "
            f"`stepledger token create`); the local stack's secret ({secret_file}) is not readable")
    return url, operator_token(secret)
