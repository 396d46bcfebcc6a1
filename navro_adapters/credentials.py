"""Client credentials and the Navro endpoints they talk to.

A :class:`Credentials` is validated once, at construction, so a typo fails at start-up with a
:class:`~navro_adapters.errors.ConfigurationError` naming the field rather than at the first
payout. The secret is held in a :class:`Secret` wrapper whose ``repr`` is masked, so neither
``repr(credentials)``, ``vars(credentials)`` nor a traceback's locals dump reveal it.

The secret may be a string or a *source*: a zero-argument callable returning the current
secret, such as :class:`SecretFile` for a secret mounted as a file (Kubernetes, Docker). A
source is read each time a token request is built, so a secret reset in the Navro Hub needs
only the mounted secret updated, never a restart.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from typing import Callable, Iterable, Mapping, Optional, Set, Tuple, Union
from urllib.parse import quote, urlsplit

from .errors import ConfigurationError

__all__ = [
    "ENVIRONMENTS",
    "Credentials",
    "OriginScope",
    "Secret",
    "SecretFile",
    "SecretSource",
    "origin_of",
]

#: What ``client_secret`` accepts: the secret, or a zero-argument callable returning it.
SecretSource = Union[str, Callable[[], str]]

#: API base URL per environment, from Navro's "Authenticate Your API Access" document.
ENVIRONMENTS: Mapping[str, str] = {
    "sandbox": "https://api.sandbox.navro.cloud",
    "production": "https://api.navro.cloud",
}

_DEFAULT_PORTS = {"http": 80, "https": 443}


class Secret:
    """A secret that never shows itself in ``repr``/``str``; ``reveal()`` returns its value.

    Holds a string, or a source (a callable) that :meth:`reveal` calls each time; what a source
    returns is checked like a string secret, and its failures become a ConfigurationError that
    names the field, never the value.
    """

    __slots__ = ("_value",)

    def __init__(self, value: SecretSource) -> None:
        self._value = value

    @property
    def changes(self) -> bool:
        """Whether the value comes from a source that may return another secret later."""
        return callable(self._value)

    def reveal(self) -> str:
        value = self._value
        if isinstance(value, str):
            return value
        try:
            current = value()
        except ConfigurationError:
            raise
        except Exception as exc:
            raise ConfigurationError(
                "client_secret", f"the secret source raised {type(exc).__name__}"
            ) from exc
        return _check_text("client_secret", current)

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __getstate__(self) -> SecretSource:
        # Pickling carries the secret (or its source) to a worker process: allowed, it is a
        # transport, not a display. Debug dumps go through repr and stay masked.
        return self._value

    def __setstate__(self, state: SecretSource) -> None:
        self._value = state


class SecretFile:
    """A secret source reading a file (a mounted Kubernetes or Docker secret) on every call.

    Surrounding whitespace (the trailing newline editors add) is stripped. A file that cannot
    be read raises a ConfigurationError naming the path and the reason, never the contents.
    """

    __slots__ = ("path",)

    def __init__(self, path: Union[str, os.PathLike[str]]) -> None:
        self.path = os.fspath(path)

    def __call__(self) -> str:
        try:
            with open(self.path, encoding="utf-8") as handle:
                return handle.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise ConfigurationError(
                "client_secret", f"cannot read the secret file {self.path!r} ({reason})"
            ) from exc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretFile) and other.path == self.path

    def __hash__(self) -> int:
        return hash(("SecretFile", self.path))

    def __repr__(self) -> str:
        return f"SecretFile({self.path!r})"


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_url(field: str, url: object) -> str:
    """Validate an absolute http(s) URL and return it without a trailing slash."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(field, "must be a non-empty URL string")
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigurationError(field, "is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigurationError(field, "must use https:// (or http:// to a loopback address)")
    if not parts.hostname:
        raise ConfigurationError(field, "has no host")
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError(
            field, "must not embed user information; pass the credentials separately"
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(field, "must not have a query string or fragment")
    if port == 0:
        raise ConfigurationError(field, "has an invalid port")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigurationError(
            field,
            "plain http:// is only allowed to loopback addresses; credentials are never sent "
            "in clear over a network (use https://)",
        )
    return url.rstrip("/")


def _check_text(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(field, f"must be a string, not {type(value).__name__}")
    if not value.strip():
        raise ConfigurationError(field, "must not be empty or whitespace")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ConfigurationError(field, "must not contain control characters")
    return value


def origin_of(url: str) -> Tuple[str, str, int]:
    """``(scheme, host, port)`` of an absolute URL, lower-cased, default ports filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    return scheme, host, port


def _host_forms(host: str) -> Tuple[str, ...]:
    """``host`` and, for an internationalised name, its other (IDNA or Unicode) form."""
    forms = {host}
    try:
        if host.isascii():
            forms.add(host.encode("ascii").decode("idna").lower())
        else:
            forms.add(host.encode("idna").decode("ascii").lower())
    except UnicodeError:
        pass
    return tuple(forms)


class OriginScope:
    """The set of origins a token may be sent to: the API base plus explicit extras.

    Adapters ask :meth:`allows` before attaching a token, so a redirect or an absolute URL
    to any other origin never carries it.
    """

    __slots__ = ("_origins", "parsed_origins")

    def __init__(self, base_url: str, extra_origins: Iterable[str] = ()) -> None:
        origins = {origin_of(base_url)}
        for extra in extra_origins:
            origins.add(origin_of(_check_url("extra_origins", extra)))
        self._origins = frozenset(origins)
        # As HTTP libraries hand parsed URLs over: the port None for the scheme's default, the
        # host in its ASCII (IDNA) form and, where it differs, its Unicode form.
        parsed: Set[Tuple[str, str, Optional[int]]] = set(origins)
        for scheme, host, port in origins:
            for form in _host_forms(host):
                parsed.add((scheme, form, port))
                if port == _DEFAULT_PORTS.get(scheme):
                    parsed.add((scheme, form, None))
        #: ``(scheme, host, port)`` keys as HTTP libraries hand parsed URLs over (lower-case; the
        #: port ``None`` for the scheme's default): a key in it is in scope. Anything else is
        #: for :meth:`allows_origin` to decide (it also accepts other cases).
        self.parsed_origins: frozenset[Tuple[str, str, Optional[int]]] = frozenset(parsed)

    def allows(self, url: str) -> bool:
        """Whether ``url`` (an absolute URL string) is on one of the origins."""
        try:
            return origin_of(url) in self._origins
        except ValueError:
            return False

    def allows_origin(self, scheme: str, host: str, port: Optional[int]) -> bool:
        """:meth:`allows` for a URL already parsed by an HTTP library (``port`` ``None``: the
        scheme's default; ``host`` in either case, ASCII or Unicode form)."""
        key = (scheme, host, port)
        if key in self.parsed_origins:  # the usual case: already lower-case
            return True
        return (scheme.lower(), host.lower(), port) in self.parsed_origins

    def __repr__(self) -> str:
        shown = sorted(f"{s}://{h}:{p}" for s, h, p in self._origins)
        return f"OriginScope({shown!r})"


class Credentials:
    """What Navro needs to issue a token: client id, secret and company, plus endpoints.

    ``environment`` picks the API base (``sandbox`` or ``production``); ``base_url`` overrides
    that base (the origin adapters attach tokens to); ``token_url`` overrides the whole token
    URL (a proxy, a gateway or a local server) while ``base_url`` stays the API base.
    """

    __slots__ = ("_secret", "base_url", "client_id", "company", "environment", "token_url")

    def __init__(
        self,
        client_id: str,
        client_secret: SecretSource,
        company: str,
        environment: str = "sandbox",
        *,
        base_url: Optional[str] = None,
        token_url: Optional[str] = None,
    ) -> None:
        self.client_id = _check_text("client_id", client_id)
        if ":" in client_id:
            # HTTP Basic joins id and secret with a colon: an id containing one cannot be sent.
            raise ConfigurationError("client_id", "must not contain ':'")
        if callable(client_secret):
            self._secret = Secret(client_secret)  # read when a token request is built
        else:
            self._secret = Secret(_check_text("client_secret", client_secret))
        self.company = _check_text("company", company).strip()
        env = environment.strip().lower() if isinstance(environment, str) else environment
        if env not in ENVIRONMENTS:
            raise ConfigurationError(
                "environment", f"must be one of {', '.join(sorted(ENVIRONMENTS))}"
            )
        self.environment: str = env
        self.base_url = (
            _check_url("base_url", base_url) if base_url is not None else ENVIRONMENTS[env]
        )
        if token_url is not None:
            self.token_url = _check_url("token_url", token_url)
        else:
            segment = quote(self.company, safe="")
            self.token_url = f"{self.base_url}/authentication/{segment}/token"

    @property
    def client_secret(self) -> str:
        """The current secret in clear, for building the Basic header. Never log it.

        With a secret source, each read calls it (and may raise ConfigurationError)."""
        return self._secret.reveal()

    @property
    def secret_changes(self) -> bool:
        """Whether the secret comes from a source that may return a new one (a reset)."""
        return self._secret.changes

    @property
    def cache_key(self) -> str:
        """A stable key for this identity: token URL, client id and a hash of the secret.

        Two sets of credentials never share a key, and the key reveals nothing of the secret;
        a new secret from a source gives a new key.
        """
        return self.cache_key_for(self.client_secret)

    def cache_key_for(self, secret: str) -> str:
        """:attr:`cache_key` for a given secret (one read of a source serves both uses)."""
        secret_hash = hashlib.sha256(secret.encode("utf-8")).hexdigest()
        material = "\x00".join((self.token_url, self.client_id, secret_hash))
        return hashlib.sha256(material.encode("utf-8")).hexdigest()[:40]

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> Credentials:
        """Build credentials from ``NAVRO_*`` environment variables.

        ``NAVRO_CLIENT_ID``, ``NAVRO_COMPANY`` and one of ``NAVRO_CLIENT_SECRET`` or
        ``NAVRO_CLIENT_SECRET_FILE`` (a path, read on every token request: a mounted secret)
        are required; ``NAVRO_ENVIRONMENT`` (default ``sandbox``), ``NAVRO_BASE_URL`` and
        ``NAVRO_TOKEN_URL`` are optional.
        """
        env = os.environ if environ is None else environ
        values = {}
        for name in ("NAVRO_CLIENT_ID", "NAVRO_COMPANY"):
            value = env.get(name)
            if value is None or not value.strip():
                raise ConfigurationError(name, "environment variable is not set")
            values[name] = value
        secret_value = (env.get("NAVRO_CLIENT_SECRET") or "").strip() or None
        secret_file = (env.get("NAVRO_CLIENT_SECRET_FILE") or "").strip() or None
        if secret_value and secret_file:
            raise ConfigurationError(
                "NAVRO_CLIENT_SECRET_FILE", "set it or NAVRO_CLIENT_SECRET, not both"
            )
        if not secret_value and not secret_file:
            raise ConfigurationError(
                "NAVRO_CLIENT_SECRET",
                "environment variable is not set (nor NAVRO_CLIENT_SECRET_FILE)",
            )
        secret: SecretSource = (
            SecretFile(secret_file) if secret_file else env["NAVRO_CLIENT_SECRET"]
        )
        return cls(
            values["NAVRO_CLIENT_ID"],
            secret,
            values["NAVRO_COMPANY"],
            env.get("NAVRO_ENVIRONMENT") or "sandbox",
            base_url=env.get("NAVRO_BASE_URL") or None,
            token_url=env.get("NAVRO_TOKEN_URL") or None,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Credentials):
            return NotImplemented
        return (self.client_id, self._secret, self.token_url, self.base_url) == (
            other.client_id,
            other._secret,
            other.token_url,
            other.base_url,
        )

    def __hash__(self) -> int:
        return hash((self.client_id, self._secret, self.token_url, self.base_url))

    def __repr__(self) -> str:
        return (
            f"Credentials(client_id={self.client_id!r}, client_secret='********', "
            f"company={self.company!r}, environment={self.environment!r}, "
            f"token_url={self.token_url!r})"
        )
