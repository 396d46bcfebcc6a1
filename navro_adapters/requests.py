"""Navro authentication for requests.

::

    import requests
    from navro_adapters import Credentials
    from navro_adapters.requests import NavroAuth

    session = requests.Session()
    session.auth = NavroAuth(Credentials.from_env())
    session.get("https://api.sandbox.navro.cloud/v1/...")

Safe to share with a ``Session`` used by many threads: the adapter keeps no per-request state;
caching, single-flight and refresh-ahead live in the :class:`~navro_adapters.TokenProvider`.
A 401 is handled in a response hook that resends once on the same connection adapter, the way
requests' own ``HTTPDigestAuth`` does.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Optional

try:
    import requests
    from requests.auth import AuthBase
    from requests.cookies import extract_cookies_to_jar
    from requests.structures import CaseInsensitiveDict
    from requests.utils import default_headers
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "navro_adapters.requests needs requests: pip install 'navro-adapters[requests]'"
    ) from exc

from ._adapter import API_VERSION_HEADER, AdapterCore, AuthSource
from ._log import fingerprint, logger
from .credentials import Credentials
from .errors import ConfigurationError, TokenTimeoutError, TransportError
from .protocol import API_VERSION, TokenRequest, TransportResponse
from .provider import TokenProvider
from .token import Token

__all__ = ["NavroAuth", "RequestsTransport"]

_extract_cookies_to_jar: Callable[[Any, Any, Any], None] = extract_cookies_to_jar

_UNAUTHORIZED = 401
_BEARER = "Bearer "
# Bodies requests holds in memory, which can be sent again; anything else (a generator, a file)
# was consumed by the first send.
_REPLAYABLE_BODIES = (bytes, bytearray, str)


def _has_store_layout() -> bool:
    """Whether CaseInsensitiveDict keeps ``_store`` as ``{lower: (name, value)}`` (checked)."""
    try:
        headers = CaseInsensitiveDict({"X-Probe": "a"})
        store = getattr(headers, "_store")  # noqa: B009 - private, hence checked here
        if dict(store) != {"x-probe": ("X-Probe", "a")}:
            return False
        store["x-other"] = ("X-Other", "b")
        return headers.get("X-OTHER") == "b"
    except Exception:
        return False


# Setting a header through CaseInsensitiveDict's public API costs more than the whole
# per-request budget when combined with a membership test (~0.4 us), so the adapter writes its
# two entries into the documented-by-code ``_store`` when that layout is confirmed at import.
_FAST_HEADERS = _has_store_layout()
_AUTHORIZATION_KEY = "authorization"
_VERSION_KEY = API_VERSION_HEADER.lower()
_VERSION_ENTRY = (API_VERSION_HEADER, API_VERSION)


class RequestsTransport:
    """A token transport on a ``requests.Session``.

    ``session`` (yours: proxies, ``verify``, ``cert``, adapters) or a private one. The request
    is prepared without the session's auth, headers, cookies or hooks and sent with
    ``allow_redirects=False``, so it can never recurse into :class:`NavroAuth` nor follow a
    redirect with the client secret.
    """

    def __init__(self, session: Optional[requests.Session] = None) -> None:
        if session is not None and not isinstance(session, requests.Session):
            raise ConfigurationError("session", "must be a requests.Session")
        self._owns_session = session is None
        self.session = session if session is not None else requests.Session()

    def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        session = self.session
        headers = default_headers()  # requests' User-Agent, as on every call
        headers.update(request.headers)
        prepared = requests.Request(
            request.method, request.url, headers=headers, data=request.body
        ).prepare()
        try:
            # proxies, verify and cert as session.request() would pick them, env included.
            settings = session.merge_environment_settings(prepared.url, {}, None, None, None)
            response = session.send(prepared, allow_redirects=False, timeout=timeout, **settings)
            try:
                body = response.content
            finally:
                response.close()
        except requests.Timeout as exc:
            raise TokenTimeoutError(f"token request timed out ({type(exc).__name__})") from exc
        except (requests.RequestException, OSError) as exc:
            raise TransportError(f"token request failed: {type(exc).__name__}") from exc
        return TransportResponse.build(response.status_code, response.headers.items(), body)

    def close(self) -> None:
        """Close the private session (a session you passed stays open)."""
        if self._owns_session:
            self.session.close()

    def __repr__(self) -> str:
        return f"RequestsTransport({'private' if self._owns_session else 'caller'} session)"


class NavroAuth(AuthBase):
    """``session.auth`` (or ``auth=``) for Navro: bearer tokens from a TokenProvider.

    ``source`` is a :class:`~navro_adapters.Credentials` (a provider is built whose token
    requests go through ``session`` if given, else a private ``requests.Session``) or a shared
    :class:`~navro_adapters.TokenProvider` (used as it is, with its own transport).
    ``provider_options`` (``refresh_policy``, ``retry_policy``, ``store``, ...) go to the
    provider built from Credentials.

    Requests to the API origin (``credentials.base_url``) and to ``extra_origins`` get
    ``Authorization: Bearer <token>`` and ``X-API-Version: 1`` (unless already set); others
    are untouched. A 401 that answered our token invalidates exactly that token and resends
    once; a body that cannot be replayed (generator, file) is not resent, the 401 is returned.
    Token endpoint failures raise :class:`~navro_adapters.NavroAuthError` from the request call.
    """

    def __init__(
        self,
        source: AuthSource,
        *,
        session: Optional[requests.Session] = None,
        extra_origins: Iterable[str] = (),
        **provider_options: Any,
    ) -> None:
        if isinstance(source, TokenProvider) and session is not None:
            raise ConfigurationError(
                "session",
                "only applies when NavroAuth builds the provider from Credentials; "
                "a TokenProvider keeps its own transport",
            )
        self._transport: Optional[RequestsTransport] = None
        self._core = AdapterCore(
            source,
            extra_origins=extra_origins,
            make_provider=lambda credentials, options: self._make_provider(
                credentials, session, options
            ),
            provider_options=provider_options,
        )
        self.provider: TokenProvider = self._core.provider
        #: Where every token this adapter attaches comes from. A plain attribute holding a
        #: bound method, so the hot path pays one call; a subclass may rebind it to a callable
        #: with the same contract (the Authlib session does, to keep ``client.token`` in step).
        self._get_token: Callable[[], Token] = self.provider.get_token
        # Bound once: registering it per request then costs one list append.
        self._on_response = self._handle_401

    def _make_provider(
        self,
        credentials: Credentials,
        session: Optional[requests.Session],
        options: Mapping[str, Any],
    ) -> TokenProvider:
        self._transport = RequestsTransport(session)
        return TokenProvider(credentials, transport=self._transport, **options)

    @property
    def credentials(self) -> Credentials:
        return self._core.credentials

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        if r.url is None or not self._core.applies_to(r.url):
            return r
        token = self._get_token()
        headers = r.headers
        if _FAST_HEADERS and type(headers) is CaseInsensitiveDict:
            store = headers._store  # type: ignore[attr-defined]
            store[_AUTHORIZATION_KEY] = ("Authorization", token.authorization)
            if _VERSION_KEY not in store:
                store[_VERSION_KEY] = _VERSION_ENTRY
        else:
            headers["Authorization"] = token.authorization
            if API_VERSION_HEADER not in headers:
                headers[API_VERSION_HEADER] = API_VERSION
        r.hooks["response"].append(self._on_response)
        return r

    def _handle_401(self, r: requests.Response, **kwargs: Any) -> requests.Response:
        """Response hook: after a 401 to our token, resend once with a new one."""
        if r.status_code != _UNAUTHORIZED:
            return r
        sent = r.request
        authorization = sent.headers.get("Authorization")
        if not authorization or not authorization.startswith(_BEARER):
            return r  # not carrying our token (stripped on a cross-origin redirect): not ours
        # Invalidate exactly what was sent: a late 401 never throws away a newer token. Done
        # even when we cannot resend, so the caller's next request carries a new token.
        access_token = authorization[len(_BEARER) :]
        self.provider.invalidate(access_token)
        body: object = sent.body
        if body is not None and not isinstance(body, _REPLAYABLE_BODIES):
            logger.debug("401 for token %s; one-shot body, not resent", fingerprint(access_token))
            return r  # the stream was consumed by the first send
        connection = getattr(r, "connection", None)
        if connection is None:
            return r  # a connection adapter that does not say how to resend (not HTTPAdapter)
        token = self._get_token()
        logger.debug("API answered 401 for token %s; resending once", fingerprint(access_token))

        # Read and release the first response so the resend can reuse its connection.
        r.content  # noqa: B018
        r.close()
        retry = sent.copy()
        # The resent copy no longer carries this hook: one resend, whatever the adapter does.
        retry.hooks = {
            event: [hook for hook in hooks if hook is not self._on_response]
            for event, hooks in sent.hooks.items()
        }
        retry.headers["Authorization"] = token.authorization
        jar = getattr(retry, "_cookies", None)  # what HTTPDigestAuth does, as requests has no API
        if jar is not None:
            _extract_cookies_to_jar(jar, sent, r.raw)
            retry.prepare_cookies(jar)
        second: requests.Response = connection.send(retry, **kwargs)
        second.history.append(r)
        second.request = retry
        return second

    def close(self) -> None:
        """Close the private session used for token requests, if this adapter made one."""
        if self._transport is not None:
            self._transport.close()

    def __repr__(self) -> str:
        return f"NavroAuth(provider={self.provider!r}, scope={self._core.scope!r})"
