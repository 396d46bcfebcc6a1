"""Authlib clients configured for Navro: requests ``OAuth2Session`` and httpx ``OAuth2Client``s.

Usage::

    from navro_adapters.authlib import async_oauth2_client, oauth2_client, oauth2_session

    session = oauth2_session(credentials)              # authlib requests_client.OAuth2Session
    session.get(f"{credentials.base_url}/v1/ping")     # the first request fetches a token

Each factory returns a subclass of the Authlib class, configured as Navro documents it (token
endpoint, ``client_secret_basic``, ``scope=openid``, ``grant_type=client_credentials``), whose
requests carry this package's own auth (:class:`navro_adapters.requests.NavroAuth` or
:class:`navro_adapters.httpx.NavroAuth`) as their default ``auth=``: Authlib's own token
handling is not involved. So the first request fetches a token, margins are proportional to
the lifetime (not Authlib's fixed 60 s), concurrent callers share one fetch, a 401 is resent
once, and token requests go out through the client itself (its ``verify=``, ``cert=``,
``proxies=``). ``shared=True`` makes every client with the same credentials and options in the
process use one :func:`shared_provider`; a :class:`~navro_adapters.TokenProvider` as the
source shares it with every other adapter.

Authlib extension points used: the constructors' metadata, ``request``/``stream`` with
``withhold_token`` and ``auth``, ``ensure_active_token``, the ``token`` setter and requests'
``Session.rebuild_auth``.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Any, Dict, Iterable, Tuple, Union

try:
    import requests
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuth2Client
    from authlib.integrations.requests_client import OAuth2Session
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "navro_adapters.authlib needs Authlib>=1.2 with requests and httpx: "
        "pip install 'navro-adapters[authlib]'"
    ) from exc

from . import httpx as navro_httpx
from . import requests as navro_requests
from ._httpx_flavours import FLAVOURS
from .auth import PROVIDER_OPTIONS, AuthSource
from .credentials import Credentials
from .errors import ConfigurationError
from .provider import TokenProvider
from .token import Token

__all__ = [
    "NavroAsyncOAuth2Client",
    "NavroOAuth2Client",
    "NavroOAuth2Session",
    "async_oauth2_client",
    "oauth2_client",
    "oauth2_session",
    "shared_provider",
]

GRANT_TYPE = "client_credentials"
SCOPE = "openid"  # per Navro's document
TOKEN_ENDPOINT_AUTH_METHOD = "client_secret_basic"  # HTTP Basic, per Navro's document
#: Constructor arguments the factories set from the Credentials; passing them is an error.
RESERVED_KWARGS = frozenset(
    {"client_id", "client_secret", "token_endpoint", "token_endpoint_auth_method", "scope"}
    | {"grant_type", "token", "token_placement", "update_token"}
)
_CLIENT_DEFAULTS = tuple(f.module.USE_CLIENT_DEFAULT for f in FLAVOURS)

_shared: weakref.WeakValueDictionary[Tuple[Any, ...], TokenProvider] = weakref.WeakValueDictionary()
_shared_lock = threading.Lock()  # taken only when a client is built, never per request


def shared_provider(credentials: Credentials, **provider_options: Any) -> TokenProvider:
    """The process-wide provider ``shared=True`` clients with these credentials and options
    draw from; kept while some client uses it. It has no transport of its own: the client
    whose request needs a token sends the token request."""
    key = (credentials, *sorted(provider_options.items()))
    with _shared_lock:
        provider = _shared.get(key)
        if provider is None:
            provider = _shared[key] = TokenProvider(credentials, **provider_options)
        return provider


def _navro_config(
    source: object, kwargs: Dict[str, Any], shared: bool
) -> Tuple[Any, Dict[str, Any]]:
    """``(auth source, provider options)``; leaves only Authlib's arguments in ``kwargs``."""
    reserved = sorted(RESERVED_KWARGS.intersection(kwargs))
    if reserved:
        raise ConfigurationError(reserved[0], "is set from the Navro Credentials; do not pass it")
    options = {name: kwargs.pop(name) for name in PROVIDER_OPTIONS.intersection(kwargs)}
    if isinstance(source, TokenProvider):
        credentials = source.credentials
    elif isinstance(source, Credentials):
        credentials = source
        if shared:
            source, options = shared_provider(source, **options), {}
    else:
        raise ConfigurationError(
            "credentials",
            "must be navro_adapters.Credentials or navro_adapters.TokenProvider, "
            f"not {type(source).__name__}",
        )
    kwargs.update(
        client_id=credentials.client_id,
        client_secret=credentials.client_secret,
        token_endpoint=credentials.token_url,
        token_endpoint_auth_method=TOKEN_ENDPOINT_AUTH_METHOD,
        scope=SCOPE,
        grant_type=GRANT_TYPE,
    )
    return source, options


def _token_dict(token: Token) -> Dict[str, Any]:
    """The token as Authlib keeps it (``client.token``)."""
    data: Dict[str, Any] = {"access_token": token.access_token, "token_type": token.token_type}
    data.update(expires_in=int(token.expires_in), expires_at=int(token.expires_at_wall))
    return data


class _NavroClient:
    """What the three clients share: configuration, their Navro auth, a safe repr."""

    navro_auth: Union[navro_requests.NavroAuth, navro_httpx.NavroAuth]

    def __init__(
        self, source: AuthSource, *, shared: bool = False, extra_origins: Iterable[str] = (),
        **kwargs: Any,
    ) -> None:  # fmt: skip
        source, options = _navro_config(source, kwargs, shared)
        super().__init__(**kwargs)
        self.navro_auth = self._navro_auth_for(source, extra_origins=extra_origins, **options)

    def _navro_auth_for(self, source: AuthSource, **kwargs: Any) -> Any:
        """Our adapter for this client, sending token requests through the client itself."""
        raise NotImplementedError

    def _navro_auth_or(self, auth: Any, withhold_token: bool) -> Any:
        """Ours, unless the caller withheld the token or chose an auth (None in old Authlib)."""
        default = auth is None or any(auth is d for d in _CLIENT_DEFAULTS)
        return self.navro_auth if default and not withhold_token else auth

    def ensure_active_token(self, token: Any = None) -> bool:
        """Make sure ``self.token`` is a valid token (fetching one if needed)."""
        self.token = _token_dict(self.navro_auth.rule.token())
        return True

    @property
    def navro_provider(self) -> TokenProvider:
        """The token provider this client draws from."""
        return self.navro_auth.provider

    def __del__(self) -> None:
        # Authlib's __del__ fails on a client whose construction raised (bad arguments).
        with contextlib.suppress(AttributeError):
            super().__del__()  # type: ignore[misc]

    def __repr__(self) -> str:
        token = self.navro_provider.token
        return (
            f"{type(self).__name__}(client_id={self.navro_provider.credentials.client_id!r}, "
            f"token={token.fingerprint if token else None!r}, scope={self.navro_auth.rule.scope!r})"
        )


class NavroOAuth2Session(_NavroClient, OAuth2Session):  # type: ignore[misc,unused-ignore]
    """Authlib's requests ``OAuth2Session`` for Navro; build it with :func:`oauth2_session`."""

    def _navro_auth_for(self, source: AuthSource, **kwargs: Any) -> Any:
        return navro_requests.NavroAuth(source, session=self, **kwargs)

    def request(  # type: ignore[override,unused-ignore]
        self, method: str, url: Any, withhold_token: bool = False, auth: Any = None, **kwargs: Any
    ) -> requests.Response:
        auth = self._navro_auth_or(auth, withhold_token)
        response: requests.Response = super().request(
            method, url, withhold_token=withhold_token, auth=auth, **kwargs
        )
        return response

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: Any) -> None:
        # requests keeps Authorization on an http -> https redirect to the same host.
        super().rebuild_auth(prepared_request, response)
        url = prepared_request.url
        if url is not None and not self.navro_auth.rule.applies_to(url):
            self.navro_auth.rule.strip_foreign(prepared_request.headers)


class _NavroHttpxClient(_NavroClient):
    """``request()`` and ``stream()`` with our auth, for both httpx clients."""

    def request(
        self, method: str, url: Any, withhold_token: bool = False, auth: Any = None, **kwargs: Any
    ) -> Any:
        auth = self._navro_auth_or(auth, withhold_token)
        return super().request(method, url, withhold_token=withhold_token, auth=auth, **kwargs)  # type: ignore[misc]

    def stream(
        self, method: str, url: Any, withhold_token: bool = False, auth: Any = None, **kwargs: Any
    ) -> Any:
        auth = self._navro_auth_or(auth, withhold_token)
        return super().stream(method, url, withhold_token=withhold_token, auth=auth, **kwargs)  # type: ignore[misc]


class NavroOAuth2Client(_NavroHttpxClient, OAuth2Client):  # type: ignore[misc,unused-ignore]
    """Authlib's httpx ``OAuth2Client`` for Navro; build it with :func:`oauth2_client`."""

    def _navro_auth_for(self, source: AuthSource, **kwargs: Any) -> Any:
        return navro_httpx.NavroAuth(source, client=self, **kwargs)


class NavroAsyncOAuth2Client(_NavroHttpxClient, AsyncOAuth2Client):  # type: ignore[misc,unused-ignore]
    """Authlib's httpx ``AsyncOAuth2Client`` for Navro; build it with
    :func:`async_oauth2_client`, on the event loop that will use it. Never blocks the loop."""

    def _navro_auth_for(self, source: AuthSource, **kwargs: Any) -> Any:
        return navro_httpx.NavroAuth(source, async_client=self, **kwargs)

    async def ensure_active_token(self, token: Any = None) -> None:  # type: ignore[override]
        """Make sure ``self.token`` is a valid token (fetching one if needed)."""
        self.token = _token_dict(await self.navro_auth.rule.atoken())


def oauth2_session(source: AuthSource, **kwargs: Any) -> NavroOAuth2Session:
    """An Authlib requests ``OAuth2Session`` for Navro.

    ``source`` is the Navro credentials or a shared provider; ``shared=True`` makes every
    client with the same credentials (and provider options) use one token; ``extra_origins``
    are further origins the token may go to; ``refresh_policy``, ``retry_policy``, ``store``
    (the provider options) go to the provider built from Credentials; everything else goes to
    ``OAuth2Session`` (``verify``, ``default_timeout``, ...).
    """
    return NavroOAuth2Session(source, **kwargs)


def oauth2_client(source: AuthSource, **kwargs: Any) -> NavroOAuth2Client:
    """An Authlib httpx ``OAuth2Client`` for Navro (see :func:`oauth2_session`); keyword
    arguments go to the client (``timeout``, ``verify``, ``cert``, ``proxy``...)."""
    return NavroOAuth2Client(source, **kwargs)


def async_oauth2_client(source: AuthSource, **kwargs: Any) -> NavroAsyncOAuth2Client:
    """An Authlib httpx ``AsyncOAuth2Client`` for Navro (see :func:`oauth2_session`)."""
    return NavroAsyncOAuth2Client(source, **kwargs)
