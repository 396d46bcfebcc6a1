"""Navro authentication for requests.

::

    import requests
    from navro_adapters import Credentials
    from navro_adapters.requests import NavroAuth

    session = requests.Session()
    session.auth = NavroAuth(Credentials.from_env(), session=session)
    session.get("https://api.sandbox.navro.cloud/v1/...")

This module only translates :class:`~navro_adapters.auth.RequestAuth`'s rule to requests: the
token goes on in ``AuthBase.__call__``, and a response hook resends once after a 401 on the
same connection adapter, the way requests' own ``HTTPDigestAuth`` does. Safe to share with a
``Session`` used by many threads: nothing here holds per-request state.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

try:
    import requests
    from requests.auth import AuthBase
    from requests.cookies import extract_cookies_to_jar
    from requests.utils import default_headers
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "navro_adapters.requests needs requests: pip install 'navro-adapters[requests]'"
    ) from exc

from ._sessions import bind_session_hint, resend_with_new_token, resent, retry_request
from .auth import UNAUTHORIZED, AuthSource, RequestAuth, RuleAdapter
from .errors import ConfigurationError
from .protocol import TokenRequest, TransportResponse
from .provider import TokenProvider
from .transport import transport_failure

__all__ = ["NavroAuth", "RequestsTransport"]

_extract_cookies_to_jar: Callable[[Any, Any, Any], None] = extract_cookies_to_jar  # untyped


class RequestsTransport:
    """Token requests on a ``requests.Session``: yours (its proxies, ``verify``, ``cert`` and
    adapters, and the environment's, as ``session.request`` would merge them) or a private
    one. Sent without the session's auth, headers, cookies or hooks, and never redirected (a
    redirect would carry the client secret elsewhere)."""

    def __init__(self, session: Optional[requests.Session] = None) -> None:
        if session is not None and not isinstance(session, requests.Session):
            raise ConfigurationError("session", "must be a requests.Session")
        self.owns_session = session is None
        self.session = session if session is not None else requests.Session()

    def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        headers = default_headers()  # requests' User-Agent, as on every call
        headers.update(request.headers)
        prepared = requests.Request(
            request.method, request.url, headers=headers, data=request.body
        ).prepare()
        try:
            settings = self.session.merge_environment_settings(prepared.url, {}, None, None, None)
            with self.session.send(
                prepared, allow_redirects=False, timeout=timeout, **settings
            ) as response:
                body = response.content
        except (requests.RequestException, OSError) as exc:
            failure = transport_failure(exc, timed_out=isinstance(exc, requests.Timeout))
            if self.owns_session and (
                not failure.retryable or isinstance(exc, requests.exceptions.ProxyError)
            ):
                failure = bind_session_hint(failure, "a private requests.Session")
            raise failure from exc
        return TransportResponse.build(response.status_code, response.headers.items(), body)

    def close(self) -> None:
        """Close the private session (a session you passed stays open)."""
        if self.owns_session:
            self.session.close()

    def __repr__(self) -> str:
        return f"RequestsTransport({'private' if self.owns_session else 'caller'} session)"


class NavroAuth(AuthBase, RuleAdapter):
    """``session.auth`` (or ``auth=``) for Navro: bearer tokens from a TokenProvider.

    ``source`` is :class:`~navro_adapters.Credentials` (a provider is built with
    ``provider_options``: ``refresh_policy``, ``retry_policy``, ``store``, ...) or a shared
    :class:`~navro_adapters.TokenProvider`. ``AuthBase`` cannot see the session it is attached
    to, so pass it as ``session=`` for token requests to use its TLS and proxy settings;
    without it they go through a private ``requests.Session`` (environment settings only).
    A provider built with a transport of its own keeps using it.

    Requests to the API origin and ``extra_origins`` get ``Authorization: Bearer <token>``
    and ``X-API-Version: 1`` (unless set); others are untouched. A 401 to our token
    invalidates exactly that token and the request is resent once; a one-shot body
    (generator, file) is not resent, the 401 is returned. Token failures raise
    :class:`~navro_adapters.NavroAuthError` from the request call.

    Pickles for worker processes, alone or with the session it is attached to (the copy's
    token requests then use the copy of that session); the copy fetches its own token.
    """

    def __init__(
        self,
        source: AuthSource,
        *,
        session: Optional[requests.Session] = None,
        extra_origins: Iterable[str] = (),
        **provider_options: Any,
    ) -> None:
        self._transport = RequestsTransport(session)
        self.rule = RequestAuth(
            source,
            extra_origins=extra_origins,
            provider_options=provider_options,
            transport=self._transport,
        )
        self.provider: TokenProvider = self.rule.provider
        self._on_response = self._handle_401  # bound once: one list append per request

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        if r.url is None or not self.rule.applies_to(r.url):
            return r
        self.rule.set_headers(r.headers, self.provider.fresh_token() or self.rule.token())
        r.hooks["response"].append(self._on_response)
        return r

    def _handle_401(self, r: requests.Response, **kwargs: Any) -> requests.Response:
        """Response hook: after a 401 to our token, resend once with a new one."""
        # requests times each send from before the pool to the answer: the margins adapt to it.
        self.provider.observe_latency(r.elapsed.total_seconds())
        if r.status_code != UNAUTHORIZED:  # every answer but a 401: nothing more to read
            return r
        connection = getattr(r, "connection", None)  # the HTTPAdapter; None for other adapters
        if not resend_with_new_token(self.rule, r) or connection is None:
            return r
        # Read and release the 401 first: the token request may need a connection (from this
        # pool, or one more the server must accept), and the resend can reuse this one.
        r.content  # noqa: B018
        r.close()
        sent = r.request
        retry = retry_request(sent, self.rule.token(), self._on_response)
        # Cookies set by the 401, as HTTPDigestAuth re-prepares them: requests has no public
        # accessor for a prepared request's jar (the one private name this package touches).
        jar = getattr(retry, "_cookies", None)
        if jar is not None:
            _extract_cookies_to_jar(jar, sent, r.raw)
            retry.prepare_cookies(jar)
        return resent(r, connection.send(retry, **kwargs), retry)  # type: ignore[no-any-return]

    def close(self) -> None:
        """Close the private session used for token requests, if this adapter made one."""
        self._transport.close()
