"""A standard-library client for the sandbox tests: urllib and ssl, nothing else."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from typing import Any, Dict, Mapping, Optional, Tuple

from navro_adapters.sandbox import Sandbox

FORM = b"grant_type=client_credentials&scope=openid"
TIMEOUT = 5.0  # seconds; every request here gives up after this

Answer = Tuple[int, Dict[str, str], bytes]


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode("ascii")


def call(
    url: str,
    method: str = "GET",
    body: Optional[bytes] = None,
    headers: Optional[Mapping[str, str]] = None,
    context: Optional[ssl.SSLContext] = None,
) -> Answer:
    """One request; an HTTP error status is returned, not raised. Lower-cased header names."""
    request = urllib.request.Request(url, data=body, headers=dict(headers or {}), method=method)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                (response.read()),
            )
    except urllib.error.HTTPError as error:
        with error:
            return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def post_token(
    sandbox: Sandbox,
    client_id: Optional[str] = None,
    secret: Optional[str] = None,
    context: Optional[ssl.SSLContext] = None,
    url: Optional[str] = None,
) -> Answer:
    """A token POST with a client's credentials (default: the sandbox's default client)."""
    credentials = sandbox.credentials(client_id)
    headers = {
        "X-API-Version": "1",
        "Authorization": basic(credentials.client_id, secret or credentials.client_secret),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    return call(url or sandbox.token_url, "POST", FORM, headers, context)


def get_token(
    sandbox: Sandbox, client_id: Optional[str] = None, context: Optional[ssl.SSLContext] = None
) -> str:
    status, _, body = post_token(sandbox, client_id, context=context)
    assert status == 200, body
    token = json.loads(body)["access_token"]
    assert isinstance(token, str) and token
    return token


def ping(sandbox: Sandbox, token: str, context: Optional[ssl.SSLContext] = None) -> Tuple[int, Any]:
    """``GET /v1/ping`` with a Bearer token: the status and the JSON answer."""
    status, _, body = call(
        f"{sandbox.base_url}/v1/ping", headers={"Authorization": f"Bearer {token}"}, context=context
    )
    return status, json.loads(body)
