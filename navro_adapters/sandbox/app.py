"""What the sandbox answers: Navro's token endpoint, a protected API sample and a redirect.

Token endpoint rules, in the order they are checked (the first failure answers):

1. ``POST /authentication/{company}/token``; other methods get 405. A company other than the
   sandbox's gets **404** ``{"error": "unknown_company"}`` (the URL names a resource that does
   not exist; no credentials are examined).
2. ``X-API-Version: 1``, else 400 ``invalid_request``.
3. HTTP Basic client authentication with a registered client's id and current secret, else
   401 ``invalid_client`` with ``WWW-Authenticate: Basic realm="navro"``. ``base64(id:secret)``
   as Navro documents it; the RFC 6749 variant (id and secret form-urlencoded first) is accepted
   too. The token issued belongs to that client.
4. A form body, ``application/x-www-form-urlencoded`` or ``multipart/form-data``, each parameter
   at most once, else 400 ``invalid_request``.
5. ``grant_type=client_credentials`` (missing: 400 ``invalid_request``; other: 400
   ``unsupported_grant_type``), then ``scope=openid`` (missing or other: 400 ``invalid_scope``).

A queued token fault replaces all of this (``delay`` only postpones it). Every token answer,
good or bad, carries ``Cache-Control: no-store``.

``GET``/``POST``/``PUT /v1/ping`` with a valid Bearer token answers 200 with JSON naming the
company and the ``client_id`` the token was issued to; anything else there gets 401.

An app may serve only some endpoints (the sandbox's token endpoint on a port of its own): a
request for an endpoint it does not serve is 404 ``not_found``, logged with kind ``"other"``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import re
from typing import FrozenSet, Mapping, Optional, Tuple, Union
from urllib.parse import parse_qs, unquote, unquote_plus

from ._http import Disconnect, Reply, Request, Response, json_response
from .control import CONTROL_KEY_HEADER, CONTROL_PATH, apply_control
from .faults import Fault, FaultKind
from .forms import FormError, parse_form
from .state import SandboxState

__all__ = ["ENDPOINTS", "SandboxApp", "endpoint_kind"]

API_VERSION = "1"  # the only X-API-Version Navro documents
GRANT_TYPE = "client_credentials"
SCOPE = "openid"
BASIC_CHALLENGE = 'Basic realm="navro"'
BEARER_CHALLENGE = 'Bearer error="invalid_token"'
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
PING_METHODS = ("GET", "POST", "PUT")
ENDPOINTS: FrozenSet[str] = frozenset({"token", "api"})

_NO_STORE: Tuple[Tuple[str, str], ...] = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))
_TOKEN_PATH_RE = re.compile(r"/authentication/([^/]+)/token")
_PRINTABLE_ASCII_RE = re.compile(r"[\x21-\x7e]+")
_DISCONNECTS = {
    FaultKind.DROP: Disconnect.DROP,
    FaultKind.RESET: Disconnect.RESET,
    FaultKind.HANG: Disconnect.HANG,
}


def endpoint_kind(path: str) -> str:
    """``"token"`` for a token URL (any company), ``"api"`` under ``/v1/``, else ``"other"``."""
    if _TOKEN_PATH_RE.fullmatch(path):
        return "token"
    if path == "/v1" or path.startswith("/v1/"):
        return "api"
    return "other"


def _oauth_error(
    status: int, error: str, description: str, extra: Tuple[Tuple[str, str], ...] = ()
) -> Response:
    document = {"error": error, "error_description": description}
    return json_response(status, document, _NO_STORE + extra)


def _basic_credentials(header: str) -> Optional[Tuple[str, str]]:
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else None


def _credential_forms(header: str) -> Tuple[Tuple[str, str], ...]:
    """The (id, secret) pairs a Basic header may mean: as sent, then RFC 6749's decoding."""
    credentials = _basic_credentials(header)
    if credentials is None:
        return ()
    client_id, secret = credentials
    try:  # RFC 6749 section 2.3.1 form-urlencodes both before Base64
        decoded = (
            unquote_plus(client_id, errors="strict"),
            unquote_plus(secret, errors="strict"),
        )
    except UnicodeDecodeError:
        return (credentials,)
    return (credentials, decoded) if decoded != credentials else (credentials,)


def _bearer_token(header: str) -> str:
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class SandboxApp:
    """The request handler of a sandbox server; all memory lives in ``state``.

    ``endpoints`` says which of ``"token"`` and ``"api"`` this server answers; the control
    endpoint exists only with a ``control_key``.
    """

    def __init__(
        self,
        state: SandboxState,
        control_key: Optional[str],
        endpoints: FrozenSet[str] = ENDPOINTS,
    ) -> None:
        self._state = state
        self._control_key = control_key.encode("utf-8") if control_key is not None else None
        self._endpoints = frozenset(endpoints)

    async def handle(self, request: Request) -> Reply:
        if request.path == CONTROL_PATH:
            return self._control(request)
        kind = endpoint_kind(request.path)
        if kind not in self._endpoints:
            kind = "other"  # served on the sandbox's other port, if at all
        self._state.record(
            request.method, request.path, request.query, request.headers, kind, request.body
        )
        if kind == "token":
            return await self._token_endpoint(request)
        if kind == "api":
            return await self._api_endpoint(request)
        return json_response(404, {"error": "not_found"})

    async def _apply_fault(self, fault: Fault, challenge: str) -> Optional[Reply]:
        """The fault's answer, or None when the request should then be answered normally."""
        if fault.kind == FaultKind.DELAY:
            await asyncio.sleep(fault.seconds)
            return None
        if fault.kind in _DISCONNECTS:
            return _DISCONNECTS[fault.kind]
        headers = fault.headers
        names = {name.lower() for name, _ in headers}
        if fault.status_code == 401 and "www-authenticate" not in names:
            headers += (("WWW-Authenticate", challenge),)
        return Response(fault.status_code, fault.body, fault.content_type, headers)

    # -- token endpoint ----------------------------------------------------------------------

    async def _token_endpoint(self, request: Request) -> Reply:
        if request.method != "POST":
            return _oauth_error(
                405, "invalid_request", "the token endpoint accepts POST only", (("Allow", "POST"),)
            )
        fault, latency = self._state.begin_token_request(
            self._claimed_client(request.headers.get("authorization", ""))
        )
        if latency:
            await asyncio.sleep(latency)
        reply: Optional[Reply] = None
        if fault is not None:
            reply = await self._apply_fault(fault, BASIC_CHALLENGE)
        if reply is None:
            answer = self._token_answer(request)
            if isinstance(answer, str):
                return self._issue_token(answer)
            reply = answer
        self._state.note_token_error()
        return reply

    def _issue_token(self, client_id: str) -> Response:
        token, ttl = self._state.issue_token(client_id)
        expires_in = int(ttl) if ttl.is_integer() else ttl
        document = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "scope": SCOPE,
        }
        return json_response(200, document, _NO_STORE)

    def _token_answer(self, request: Request) -> Union[Response, str]:
        """The rejection of an invalid token request, or the client id to issue a token to."""
        match = _TOKEN_PATH_RE.fullmatch(request.path)
        try:
            company = unquote(match.group(1), errors="strict") if match else None
        except UnicodeDecodeError:
            company = None
        if company != self._state.company:
            return _oauth_error(404, "unknown_company", "no such company")
        headers = request.headers
        if headers.get("x-api-version", "").strip() != API_VERSION:
            return _oauth_error(400, "invalid_request", "send the header X-API-Version: 1")
        client_id = self._authenticated_client(headers.get("authorization", ""))
        if client_id is None:
            return _oauth_error(
                401,
                "invalid_client",
                "client authentication failed",
                (("WWW-Authenticate", BASIC_CHALLENGE),),
            )
        try:
            form = parse_form(headers.get("content-type"), request.body)
        except FormError as exc:
            return _oauth_error(400, "invalid_request", str(exc))
        grant_type = form.get("grant_type")
        if grant_type is None:
            return _oauth_error(400, "invalid_request", "grant_type is missing")
        if grant_type != GRANT_TYPE:
            return _oauth_error(400, "unsupported_grant_type", "use client_credentials")
        if form.get("scope") != SCOPE:
            return _oauth_error(400, "invalid_scope", "the scope must be openid")
        return client_id

    def _authenticated_client(self, header: str) -> Optional[str]:
        """The registered client whose id and secret the Basic header carries, or None."""
        for client_id, secret in _credential_forms(header):
            if self._state.client_matches(client_id, secret):
                return client_id
        return None

    def _claimed_client(self, header: str) -> Optional[str]:
        """The registered client a Basic header names, right secret or not (for the stats)."""
        for client_id, _ in _credential_forms(header):
            if self._state.is_client(client_id):
                return client_id
        return None

    # -- API sample --------------------------------------------------------------------------

    async def _api_endpoint(self, request: Request) -> Reply:
        fault, always_401 = self._state.begin_api_request()
        reply: Optional[Reply] = None
        if fault is not None:
            reply = await self._apply_fault(fault, BEARER_CHALLENGE)
        if reply is None:
            reply = self._api_answer(request, always_401)
        if isinstance(reply, Response) and reply.status == 401:
            self._state.note_api_401()
        return reply

    def _api_answer(self, request: Request, always_401: bool) -> Response:
        if request.path == "/v1/ping":
            if request.method not in PING_METHODS:
                allow = (("Allow", ", ".join(PING_METHODS)),)
                return json_response(405, {"error": "method_not_allowed"}, allow)
            token = _bearer_token(request.headers.get("authorization", ""))
            owner = self._state.token_owner(token) if token and not always_401 else None
            if owner is None:
                document = {
                    "error": "invalid_token",
                    "error_description": "the access token is missing, expired or revoked",
                }
                return json_response(401, document, (("WWW-Authenticate", BEARER_CHALLENGE),))
            return json_response(
                200,
                {
                    "ok": True,
                    "company": self._state.company,
                    "client_id": owner,
                    "api_version": request.headers.get("x-api-version"),
                    "method": request.method,
                    "body_bytes": len(request.body),
                },
            )
        if request.path == "/v1/redirect":
            return self._redirect(request.query)
        return json_response(404, {"error": "not_found"})

    @staticmethod
    def _redirect(query: str) -> Response:
        """``?to=<url>[&code=307]``: a redirect anywhere, to test cross-origin token leaks."""
        try:
            params = parse_qs(query, errors="strict")
        except (UnicodeDecodeError, ValueError):
            params = {}
        target = params.get("to", [""])[0]
        code_text = params.get("code", ["302"])[0]
        code = int(code_text) if code_text.isdigit() and len(code_text) == 3 else 0
        absolute = target.startswith(("http://", "https://", "/"))
        if not absolute or not _PRINTABLE_ASCII_RE.fullmatch(target):
            return json_response(400, {"error": "invalid_request", "error_description": "bad to"})
        if code not in REDIRECT_STATUSES:
            return json_response(400, {"error": "invalid_request", "error_description": "bad code"})
        return json_response(code, {"location": target}, (("Location", target),))

    # -- control -------------------------------------------------------------------------------

    def _control(self, request: Request) -> Response:
        given = request.headers.get(CONTROL_KEY_HEADER, "").encode("utf-8")
        if self._control_key is None or not hmac.compare_digest(given, self._control_key):
            return json_response(404, {"error": "not_found"})  # the endpoint does not exist
        if request.method != "POST":
            return json_response(405, {"error": "method_not_allowed"}, (("Allow", "POST"),))
        try:
            document = json.loads(request.body.decode("utf-8"))
            op = document["op"]
            args = document.get("args", {})
            if not isinstance(op, str) or not isinstance(args, Mapping):
                raise ValueError("op must be a string and args an object")
            result = apply_control(self._state, op, args)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            description = str(exc) if isinstance(exc, ValueError) else f"malformed: {exc!r}"
            error = {"error": "invalid_request", "error_description": description}
            return json_response(400, error)
        return json_response(200, {"result": result})
