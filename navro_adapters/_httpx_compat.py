"""Which httpx flavours are installed (httpx, httpx2 or both), and what the adapter needs of each.

httpx2 is the maintained successor of httpx with the same API under another import name. The
adapter in :mod:`navro_adapters.httpx` serves both, so this module finds every installed
flavour once, at import, and describes each in a :class:`Flavour`. ``httpx2.alias_httpx()``
makes ``import httpx`` return httpx2: the two names are then one module and one flavour.

It also holds the one place the adapter reaches into httpx internals: setting two headers
through ``Headers.__setitem__`` costs about 0.8 us each (it re-encodes and rescans the list),
more than the whole per-request budget, so when a flavour's ``Headers`` keeps its documented-
by-code ``_list`` of ``(raw_key, lower_key, value)`` byte triples (httpx 0.18 to 0.28 and
httpx2) the headers are edited there; a flavour whose layout differs gets the public API.
"""

from __future__ import annotations

import importlib
from operator import itemgetter
from types import ModuleType
from typing import Any, Dict, List, Optional, Tuple

from ._adapter import API_VERSION_HEADER
from .protocol import API_VERSION

__all__ = [
    "FLAVOURS",
    "FAST_URL_TYPES",
    "FLAVOUR_BY_REQUEST",
    "INSTALL_HINT",
    "Flavour",
    "authorization_entry",
    "flavour_of_client",
    "replace_authorization",
    "set_auth_headers",
    "url_keys",
]

INSTALL_HINT = (
    "navro_adapters.httpx needs httpx or httpx2: "
    "pip install 'navro-adapters[httpx]' (or 'navro-adapters[httpx2]')"
)
_FLAVOUR_NAMES = ("httpx", "httpx2")  # httpx first: the name most code imports today

_DEFAULT_PORTS = {"http": 80, "https": 443}
_AUTHORIZATION_KEY = b"authorization"
_AUTHORIZATION_RAW = b"Authorization"
_VERSION_KEY = API_VERSION_HEADER.lower().encode("ascii")
_VERSION_ENTRY = (API_VERSION_HEADER.encode("ascii"), _VERSION_KEY, API_VERSION.encode("ascii"))


class Flavour:
    """One installed httpx-compatible library and the types the adapter checks against."""

    __slots__ = (
        "fast_headers",
        "fast_urls",
        "module",
        "name",
        "replayable_streams",
        "request_type",
        "url_type",
    )

    def __init__(self, name: str, module: ModuleType) -> None:
        self.name = name
        self.module = module
        self.request_type: type = module.Request
        # A ByteStream holds the whole body in memory, so a request carrying one can be sent
        # again; generator bodies (sync or async) cannot, and multipart file uploads are not
        # resent either (a non-seekable file would silently go out truncated).
        self.replayable_streams: Tuple[type, ...] = (module.ByteStream,)
        self.url_type: type = module.URL
        self.fast_headers = _has_list_layout(module)
        self.fast_urls = _has_reference_layout(module)

    def __repr__(self) -> str:
        version = getattr(self.module, "__version__", "?")
        return f"Flavour({self.name!r}, version={version!r})"


def _has_list_layout(module: ModuleType) -> bool:
    """Whether ``module.Headers`` stores ``_list`` as we edit it (checked, never assumed)."""
    try:
        headers = module.Headers({"X-Probe": "a"})
        entries = headers._list
        if not (isinstance(entries, list) and entries == [(b"X-Probe", b"x-probe", b"a")]):
            return False
        entries.append((b"X-Other", b"x-other", b"b"))
        entries[0] = (b"X-Probe", b"x-probe", b"c")
        return bool(headers.get("x-other") == "b" and headers["X-PROBE"] == "c")
    except Exception:
        return False


def _has_reference_layout(module: ModuleType) -> bool:
    """Whether ``URL._uri_reference`` exposes the parsed scheme, host and normalised port."""
    try:
        ref = module.URL("HTTPS://Example.COM:8443/p")._uri_reference
        default = module.URL("https://example.com:443/")._uri_reference
        return bool(
            (ref.scheme, ref.host, ref.port) == ("https", "example.com", 8443)
            and default.port is None
        )
    except Exception:
        return False


def _discover() -> List[Flavour]:
    found: List[Flavour] = []
    for name in _FLAVOUR_NAMES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if any(flavour.module is module for flavour in found):
            continue  # httpx2.alias_httpx() was called: "httpx" is httpx2
        try:
            found.append(Flavour(name, module))
        except AttributeError:
            continue  # something else answers to that name; not an httpx we can drive
    return found


FLAVOURS: Tuple[Flavour, ...] = tuple(_discover())
if not FLAVOURS:
    raise ImportError(INSTALL_HINT)

#: The flavour a request belongs to, by its exact class.
FLAVOUR_BY_REQUEST: Dict[type, Flavour] = {f.request_type: f for f in FLAVOURS}
_FAST_REQUEST_TYPES = frozenset(f.request_type for f in FLAVOURS if f.fast_headers)
#: URL classes whose parsed parts can be read straight from ``_uri_reference``.
FAST_URL_TYPES = frozenset(f.url_type for f in FLAVOURS if f.fast_urls)
_OUR_KEYS = frozenset((_AUTHORIZATION_KEY, _VERSION_KEY))
_lower_key = itemgetter(1)


def url_keys(url: Any) -> List[Tuple[str, str, Optional[int]]]:
    """Every ``(scheme, host, port)`` form under which the adapter may see ``url``'s origin.

    The public properties and, where checked, ``_uri_reference`` (IDNA hosts differ between
    them); ports both as parsed (``None`` for the default) and explicit.
    """
    forms = [(url.scheme, url.host, url.port)]
    fast = url.__class__ in FAST_URL_TYPES
    if fast:
        ref = url._uri_reference
        forms.append((ref.scheme, ref.host, ref.port))
    default_port = _DEFAULT_PORTS.get(url.scheme)
    keys = []
    for scheme, host, port in forms:
        keys.append((scheme, host, port))
        if port is None:
            keys.append((scheme, host, default_port))
        elif port == default_port:
            keys.append((scheme, host, None))
    return keys


def flavour_of_client(client: Any) -> Optional[Flavour]:
    """The flavour whose ``Client``/``AsyncClient`` ``client`` is an instance of."""
    for flavour in FLAVOURS:
        if isinstance(client, (flavour.module.Client, flavour.module.AsyncClient)):
            return flavour
    return None


def authorization_entry(authorization: str) -> Tuple[bytes, bytes, bytes]:
    """The ``_list`` triple for an Authorization value (built once per token by the adapter)."""
    return (_AUTHORIZATION_RAW, _AUTHORIZATION_KEY, authorization.encode("ascii"))


def set_auth_headers(request: Any, authorization: str, entry: Tuple[bytes, bytes, bytes]) -> None:
    """Set ``Authorization`` (replacing any) and ``X-API-Version`` unless the caller set it.

    ``entry`` is :func:`authorization_entry` of ``authorization``.
    """
    headers = request.headers
    if request.__class__ in _FAST_REQUEST_TYPES:
        entries = headers._list
        if _OUR_KEYS.isdisjoint(map(_lower_key, entries)):  # the usual case, at C speed
            entries.append(entry)
            entries.append(_VERSION_ENTRY)
            return
        keys = [item[1] for item in entries]
        if keys.count(_AUTHORIZATION_KEY) <= 1:
            if _AUTHORIZATION_KEY in keys:
                entries[keys.index(_AUTHORIZATION_KEY)] = entry
            else:
                entries.append(entry)
            if _VERSION_KEY not in keys:
                entries.append(_VERSION_ENTRY)
            return
        # Several Authorization headers: let httpx collapse them into ours.
    _set_authorization_slow(headers, authorization)


def _set_authorization_slow(headers: Any, authorization_text: str) -> None:
    headers["Authorization"] = authorization_text
    if API_VERSION_HEADER not in headers:
        headers[API_VERSION_HEADER] = API_VERSION


def replace_authorization(request: Any, authorization_text: str) -> None:
    """Overwrite the Authorization header for a resend (off the hot path: public API)."""
    request.headers["Authorization"] = authorization_text
