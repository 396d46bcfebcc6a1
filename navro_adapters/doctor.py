"""``navro-adapters doctor``: check a configuration step by step and say what to change.

Each check is a small function returning a typed :class:`StepResult` (one subclass per step,
holding what it found); :func:`run_doctor` runs them in order and marks every step that
depends on a failed one as skipped. The order is the path a token request takes:

1. ``credentials``: company, client id and a non-empty secret, and the token URL they give;
2. ``proxy``: the proxy the environment sets for the token URL, and whether it is bypassed;
3. ``dns`` and 4. ``tcp``: the host the request really connects to (the proxy when one is in
   effect, the token endpoint otherwise), its addresses and the connect time;
5. ``tls`` (https only): the handshake, the server's certificate and the trust in use;
6. ``token``: one real token request through :class:`~navro_adapters.TokenProvider` and
   :class:`~navro_adapters.UrllibTransport` with the SSL context step 5 verified, with the
   token's lifetime and the clock skew against the response's ``Date``;
7. ``api`` (with ``api_url``): one authenticated request, sent only inside the API's origin.

Standard library only (socket, ssl, urllib, http.client). Every failure is one line saying
what to change. No result, message or JSON field holds the secret or the access token (a token
appears as its fingerprint), nor a proxy's password.
"""

from __future__ import annotations

import base64
import email.utils
import enum
import http.client
import os
import socket
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit

from .auth import RequestAuth
from .credentials import Credentials
from .errors import (
    ConfigurationError,
    InvalidClientError,
    NavroAuthError,
    TokenEndpointError,
    TokenResponseError,
    TokenTimeoutError,
)
from .protocol import TokenRequest, TransportResponse
from .provider import STORE_CLOCK_SKEW, TokenProvider
from .retry import DEFAULT_ATTEMPT_TIMEOUT, RetryPolicy
from .token import Token
from .transport import UrllibTransport, _NoRedirect

__all__ = [
    "DEFAULT_TIMEOUT",
    "STEPS",
    "ApiResult",
    "CertificateInfo",
    "CredentialsResult",
    "DnsResult",
    "DoctorOptions",
    "Outcome",
    "ProxyResult",
    "ProxyRoute",
    "StepResult",
    "TcpResult",
    "TlsResult",
    "TokenResult",
    "Trust",
    "check_api",
    "check_credentials",
    "check_dns",
    "check_proxy",
    "check_tcp",
    "check_tls",
    "check_token",
    "exit_status",
    "format_report",
    "report_json",
    "run_doctor",
    "ssl_context_for",
    "trust_in_use",
]

DEFAULT_TIMEOUT = DEFAULT_ATTEMPT_TIMEOUT  # seconds for each network step
DATE_RESOLUTION = 1.0  # seconds: an HTTP Date header carries whole seconds
# Beyond this the clock is off by more than a shared token store allows for (STORE_CLOCK_SKEW).
CLOCK_SKEW_WARNING = STORE_CLOCK_SKEW + DATE_RESOLUTION
CERTIFICATE_EXPIRY_WARNING = 14 * 86400.0  # seconds of validity left below which tls warns
#: CA variables other HTTP clients read but the standard library does not.
OTHER_CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
# OpenSSL verify codes (X509_V_ERR_*) that have a more precise fix than "trust its CA".
_CERT_EXPIRED = 10
_HOSTNAME_MISMATCH = 62
_IP_MISMATCH = 64
_NAME_KEYS = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
}
_WHERE_URL = "NAVRO_BASE_URL / --base-url (or NAVRO_TOKEN_URL / --token-url)"
_CREDENTIAL_FIXES = {
    "NAVRO_CLIENT_ID": "set NAVRO_CLIENT_ID or pass --client-id",
    "client_id": "fix NAVRO_CLIENT_ID / --client-id",
    "NAVRO_COMPANY": "set NAVRO_COMPANY or pass --company",
    "company": "fix NAVRO_COMPANY / --company",
    "NAVRO_CLIENT_SECRET": "set NAVRO_CLIENT_SECRET or NAVRO_CLIENT_SECRET_FILE "
    "(or pass --client-secret-file)",
    "NAVRO_CLIENT_SECRET_FILE": "keep one of them",
    "client_secret": "fix the secret (NAVRO_CLIENT_SECRET, or the file NAVRO_CLIENT_SECRET_FILE "
    "/ --client-secret-file names)",
    "environment": "use --environment sandbox or production",
    "base_url": "fix NAVRO_BASE_URL / --base-url",
    "token_url": "fix NAVRO_TOKEN_URL / --token-url",
}


class Outcome(enum.Enum):
    OK = "ok"
    WARN = "warn"  # passed, with something worth fixing
    FAIL = "fail"
    SKIP = "skip"  # not run: not applicable, or a step it depends on failed


@dataclass(frozen=True)
class StepResult:
    """One step: its name, outcome and a one-line message (for a failure: what to change)."""

    step: str
    outcome: Outcome
    message: str

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAIL

    def to_json(self) -> Dict[str, Any]:
        document = asdict(self)
        document["outcome"] = self.outcome.value
        return document


@dataclass(frozen=True)
class CredentialsResult(StepResult):
    company: Optional[str] = None
    client_id: Optional[str] = None
    secret_source: Optional[str] = None  # "value" or "file <path>"; never the secret itself
    token_url: Optional[str] = None
    base_url: Optional[str] = None


@dataclass(frozen=True)
class ProxyResult(StepResult):
    proxy: Optional[str] = None  # the proxy URL without user information
    bypassed: bool = False  # a proxy is set but NO_PROXY exempts the token URL's host
    via_proxy: bool = False  # the token request goes through ``proxy``


@dataclass(frozen=True)
class DnsResult(StepResult):
    host: Optional[str] = None
    port: Optional[int] = None
    addresses: Tuple[str, ...] = ()


@dataclass(frozen=True)
class TcpResult(StepResult):
    address: Optional[str] = None  # the address that accepted, or the last one tried
    connect_ms: Optional[float] = None


@dataclass(frozen=True)
class CertificateInfo:
    subject: str
    issuer: str
    not_after: str
    names: Tuple[str, ...] = ()  # subjectAltName values


@dataclass(frozen=True)
class TlsResult(StepResult):
    trust: Optional[str] = None  # Trust.describe(): which CA certificates verify the server
    version: Optional[str] = None
    cipher: Optional[str] = None
    leaf: Optional[CertificateInfo] = None
    chain_length: Optional[int] = None  # certificates the server sent (Python 3.13+ only)


@dataclass(frozen=True)
class TokenResult(StepResult):
    status_code: Optional[int] = None
    expires_in: Optional[float] = None
    fingerprint: Optional[str] = None
    server_date: Optional[str] = None
    clock_skew: Optional[float] = None  # seconds the local clock is ahead of the server's Date


@dataclass(frozen=True)
class ApiResult(StepResult):
    url: Optional[str] = None
    status_code: Optional[int] = None


@dataclass(frozen=True)
class DoctorOptions:
    """What to check: credential variables (``NAVRO_*``, flags already applied), and optionally
    a CA file to trust instead of the default, an API URL to call and a per-step timeout."""

    environ: Mapping[str, str]
    ca_file: Optional[str] = None
    api_url: Optional[str] = None
    timeout: float = DEFAULT_TIMEOUT


# -- 1. credentials ---------------------------------------------------------------------------


def check_credentials(
    environ: Mapping[str, str],
) -> Tuple[CredentialsResult, Optional[Credentials]]:
    """Build the credentials as ``token`` does and read the secret once (never shown)."""
    try:
        credentials = Credentials.from_env(environ)
        secret = credentials.client_secret
    except ConfigurationError as exc:
        fix = _CREDENTIAL_FIXES.get(exc.field, "fix it")
        return CredentialsResult("credentials", Outcome.FAIL, f"{exc}: {fix}"), None
    secret_file = (environ.get("NAVRO_CLIENT_SECRET_FILE") or "").strip()
    source = f"file {secret_file}" if credentials.secret_changes else "value"
    outcome, note = Outcome.OK, ""
    if secret != secret.strip():
        outcome = Outcome.WARN
        note = " (it has spaces around it: check they belong to it)"
    message = (
        f"company {credentials.company}, client id {credentials.client_id}, "
        f"secret {'from ' + source if credentials.secret_changes else 'set'}{note}; "
        f"token URL {credentials.token_url}"
    )
    result = CredentialsResult(
        "credentials",
        outcome,
        message,
        company=credentials.company,
        client_id=credentials.client_id,
        secret_source=source,
        token_url=credentials.token_url,
        base_url=credentials.base_url,
    )
    return result, credentials


# -- 2. proxy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProxyRoute:
    """Where a proxied request connects: the proxy's host and port."""

    host: str
    port: int
    shown: str  # the URL without user information
    authorization: Optional[str] = field(default=None, repr=False)  # never shown


def check_proxy(url: str) -> Tuple[ProxyResult, Optional[ProxyRoute]]:
    """The proxy ``urllib`` uses for ``url``: from the environment, unless NO_PROXY exempts it."""
    parts = urlsplit(url)
    configured = urllib.request.getproxies().get(parts.scheme)
    if not configured:
        return ProxyResult("proxy", Outcome.OK, "none set (direct connection)"), None
    variable = f"{parts.scheme.upper()}_PROXY"
    proxy_url = configured if "://" in configured else f"http://{configured}"
    try:
        proxy_parts = urlsplit(proxy_url)
        proxy_port = proxy_parts.port or 80
    except ValueError:
        message = f"{variable} is not a valid URL: fix it or unset it"
        return ProxyResult("proxy", Outcome.FAIL, message), None
    if proxy_parts.scheme != "http" or not proxy_parts.hostname:
        message = (
            f"{variable} must be an http://host:port proxy URL (the standard library "
            "talks to proxies in plain HTTP): fix it or unset it"
        )
        return ProxyResult("proxy", Outcome.FAIL, message), None
    host = proxy_parts.hostname
    shown = f"http://{host}:{proxy_port}" if ":" not in host else f"http://[{host}]:{proxy_port}"
    authorization = None
    if proxy_parts.username is not None:
        pair = f"{unquote(proxy_parts.username)}:{unquote(proxy_parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        shown += " (with credentials)"
    if urllib.request.proxy_bypass(parts.netloc):  # what urllib's ProxyHandler asks too
        message = f"{variable} {shown} is set, but NO_PROXY exempts {parts.hostname}: direct"
        return ProxyResult("proxy", Outcome.OK, message, proxy=shown, bypassed=True), None
    message = f"the token request goes through {variable} {shown}"
    result = ProxyResult("proxy", Outcome.OK, message, proxy=shown, via_proxy=True)
    return result, ProxyRoute(host, proxy_port, shown, authorization)


# -- 3. dns and 4. tcp ------------------------------------------------------------------------


def check_dns(host: str, port: int, *, where: str = _WHERE_URL) -> DnsResult:
    """The addresses ``host`` resolves to; ``where`` names the setting that holds the host."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        message = f"cannot resolve {host} ({reason}): check the host in {where}, and DNS"
        return DnsResult("dns", Outcome.FAIL, message, host=host, port=port)
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    message = f"{host} resolves to {', '.join(addresses)}"
    return DnsResult("dns", Outcome.OK, message, host=host, port=port, addresses=addresses)


def check_tcp(
    addresses: Sequence[str], port: int, *, timeout: float, where: str = _WHERE_URL
) -> TcpResult:
    """Connect to each address in turn until one accepts; the connect time of that one."""
    failure = "no address to connect to"
    last = None
    for address in addresses:
        last = _join(address, port)
        started = time.perf_counter()
        try:
            with socket.create_connection((address, port), timeout=timeout):
                elapsed_ms = (time.perf_counter() - started) * 1000.0
        except ConnectionRefusedError:
            failure = (
                f"connection refused by {last}: nothing listens on that port; check the "
                f"port in {where}"
            )
        except (socket.timeout, TimeoutError):
            failure = (
                f"no answer from {last} within {timeout:g} s: a firewall may drop it; check "
                f"the address in {where}, or set HTTPS_PROXY if this network needs a proxy"
            )
        except OSError as exc:
            failure = (
                f"cannot connect to {last} ({exc.strerror or type(exc).__name__}): check the "
                f"address in {where} and the network"
            )
        else:
            message = f"connected to {last} in {elapsed_ms:.1f} ms"
            return TcpResult(
                "tcp", Outcome.OK, message, address=last, connect_ms=round(elapsed_ms, 3)
            )
    return TcpResult("tcp", Outcome.FAIL, failure, address=last)


# -- 5. tls -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trust:
    """Which CA certificates verify the server: ``source`` is ``--ca-file``, ``SSL_CERT_FILE``,
    ``SSL_CERT_DIR`` or ``system default``; ``location`` the file or directory."""

    source: str
    location: str
    ca_file: Optional[str] = None  # the file to load instead of the default, if any

    def describe(self) -> str:
        return f"{self.source} ({self.location})"


def trust_in_use(ca_file: Optional[str], environ: Optional[Mapping[str, str]] = None) -> Trust:
    """The trust the standard library applies: ``ca_file`` alone when given (as
    ``UrllibTransport(ca_file=...)`` does), else OpenSSL's defaults, which honour
    ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``."""
    if ca_file is not None:
        return Trust("--ca-file", ca_file, ca_file)
    env = os.environ if environ is None else environ
    paths = ssl.get_default_verify_paths()
    if env.get(paths.openssl_cafile_env):
        return Trust(paths.openssl_cafile_env, env[paths.openssl_cafile_env])
    if env.get(paths.openssl_capath_env):
        return Trust(paths.openssl_capath_env, env[paths.openssl_capath_env])
    location = paths.cafile or paths.capath or paths.openssl_cafile
    return Trust("system default", location)


def ssl_context_for(trust: Trust) -> ssl.SSLContext:
    """The context every https step uses; ConfigurationError for a CA file it cannot load."""
    if trust.ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=trust.ca_file)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.reason if isinstance(exc, ssl.SSLError) else exc.strerror
        raise ConfigurationError(
            "--ca-file",
            f"cannot load {trust.ca_file} ({reason or type(exc).__name__}): give a PEM file "
            "of CA certificates",
        ) from exc


def check_tls(
    host: str,
    port: int,
    context: ssl.SSLContext,
    trust: Trust,
    *,
    timeout: float,
    proxy: Optional[ProxyRoute] = None,
) -> TlsResult:
    """One handshake with ``host:port`` (through ``proxy``'s CONNECT tunnel if given)."""
    try:
        tls_socket, closer = _handshake(host, port, context, timeout, proxy)
    except ssl.SSLCertVerificationError as exc:
        message = _certificate_failure(exc, host, trust)
        return TlsResult("tls", Outcome.FAIL, message, trust=trust.describe())
    except ssl.SSLError as exc:
        message = _handshake_failure(exc.reason or type(exc).__name__)
        return TlsResult("tls", Outcome.FAIL, message, trust=trust.describe())
    except (socket.timeout, TimeoutError):
        message = f"no TLS answer within {timeout:g} s: check the port serves https"
        return TlsResult("tls", Outcome.FAIL, message, trust=trust.describe())
    except OSError as exc:  # a reset, or the proxy refusing the tunnel
        reason = exc.strerror or (str(exc.args[0]) if exc.args else type(exc).__name__)
        where = "through the proxy (check it allows CONNECT to that port)" if proxy else ""
        message = f"TLS connection failed {where} ({reason}): check the port serves https"
        return TlsResult("tls", Outcome.FAIL, " ".join(message.split()), trust=trust.describe())
    try:
        leaf = _certificate_info(tls_socket.getpeercert())
        chain = getattr(tls_socket, "get_unverified_chain", None)  # Python 3.13+
        chain_length = len(chain()) if chain is not None else None
        cipher = tls_socket.cipher()
        version = tls_socket.version()
    finally:
        closer()
    message = (
        f"{version}, certificate {_short(leaf.subject) or ', '.join(leaf.names)} issued by "
        f"{_short(leaf.issuer)}, valid until {leaf.not_after}; verified with {trust.describe()}"
    )
    outcome = Outcome.OK
    try:
        left = ssl.cert_time_to_seconds(leaf.not_after) - time.time()
    except ValueError:
        left = CERTIFICATE_EXPIRY_WARNING
    if left < CERTIFICATE_EXPIRY_WARNING:
        outcome = Outcome.WARN
        message += f"; it expires in {left / 86400:.0f} days: the server must renew it"
    return TlsResult(
        "tls",
        outcome,
        message,
        trust=trust.describe(),
        version=version,
        cipher=cipher[0] if cipher else None,
        leaf=leaf,
        chain_length=chain_length,
    )


def _handshake(
    host: str, port: int, context: ssl.SSLContext, timeout: float, proxy: Optional[ProxyRoute]
) -> Tuple[ssl.SSLSocket, Callable[[], None]]:
    if proxy is None:
        raw = socket.create_connection((host, port), timeout=timeout)
        try:
            tls_socket = context.wrap_socket(raw, server_hostname=host)
        except BaseException:
            raw.close()
            raise
        return tls_socket, tls_socket.close
    connection = http.client.HTTPSConnection(
        proxy.host, proxy.port, timeout=timeout, context=context
    )
    headers = {"Proxy-Authorization": proxy.authorization} if proxy.authorization else None
    connection.set_tunnel(host, port, headers=headers)
    try:
        connection.connect()
    except BaseException:
        connection.close()
        raise
    assert isinstance(connection.sock, ssl.SSLSocket)
    return connection.sock, connection.close


def _certificate_failure(exc: ssl.SSLCertVerificationError, host: str, trust: Trust) -> str:
    detail = exc.verify_message or "verification failed"
    if exc.verify_code in (_HOSTNAME_MISMATCH, _IP_MISMATCH):
        return (
            f"certificate problem ({detail}): the server's certificate is not for {host}; "
            f"use the host name it names in {_WHERE_URL}"
        )
    if exc.verify_code == _CERT_EXPIRED:
        return (
            f"certificate problem ({detail}): the server's certificate has expired, or this "
            "machine's clock is wrong: check the clock; otherwise the server must renew it"
        )
    others = [name for name in OTHER_CA_VARIABLES if os.environ.get(name)]
    note = (
        f" ({' and '.join(others)} {'is' if len(others) == 1 else 'are'} set, but only "
        "requests and curl read it: pass that file as --ca-file)"
        if others
        else ""
    )
    return (
        f"certificate problem ({detail}): the server's certificate is not trusted by "
        f"{trust.describe()}; pass --ca-file with the CA that issued it (PEM), or set "
        f"SSL_CERT_FILE to it{note}"
    )


def _handshake_failure(reason: str) -> str:
    if reason == "WRONG_VERSION_NUMBER":
        return (
            "TLS handshake failed (WRONG_VERSION_NUMBER): that port does not speak TLS; use "
            f"http:// or the https port in {_WHERE_URL}"
        )
    if "CERTIFICATE_REQUIRED" in reason or "HANDSHAKE_FAILURE" in reason:
        return (
            f"TLS handshake failed ({reason}): the server may require a client certificate "
            "(mutual TLS): configure your HTTP client with it (cert=, ssl_context=)"
        )
    return f"TLS handshake failed ({reason}): check the server's TLS settings and the port"


def _certificate_info(peer: Optional[Dict[str, Any]]) -> CertificateInfo:
    peer = peer or {}
    names = tuple(str(value) for _, value in peer.get("subjectAltName", ()))
    return CertificateInfo(
        subject=_format_name(peer.get("subject", ())),
        issuer=_format_name(peer.get("issuer", ())),
        not_after=str(peer.get("notAfter", "?")),
        names=names,
    )


def _short(name: str) -> str:
    """The CN (else the O) of a formatted name, for the one-line report; the result keeps all."""
    parts = name.split(", ")
    for key in ("CN=", "O="):
        found = [part for part in parts if part.startswith(key)]
        if found:
            return found[0]
    return name


def _format_name(name: Any) -> str:
    """``CN=x, O=y`` from the nested tuples ``getpeercert()`` gives."""
    parts = []
    for rdn in name:
        for key, value in rdn:
            parts.append(f"{_NAME_KEYS.get(key, key)}={value}")
    return ", ".join(parts)


# -- 6. token ---------------------------------------------------------------------------------


class _RecordingTransport:
    """UrllibTransport, keeping the last response's status and headers and when it came."""

    def __init__(self, inner: UrllibTransport) -> None:
        self.inner = inner
        self.response: Optional[TransportResponse] = None
        self.received_at: Optional[float] = None

    def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        response = self.inner(request, timeout=timeout)
        self.received_at = time.time()
        self.response = response
        return response


def check_token(
    credentials: Credentials, context: Optional[ssl.SSLContext], *, timeout: float
) -> Tuple[TokenResult, Optional[TokenProvider]]:
    """One token request (no retry) through the library's provider; the provider holds the
    token for the api step."""
    recorder = _RecordingTransport(UrllibTransport(ssl_context=context))
    policy = RetryPolicy(max_attempts=1, attempt_timeout=timeout, deadline=timeout)
    provider = TokenProvider(credentials, transport=recorder, retry_policy=policy)
    response = None
    try:
        token = provider.get_token()
    except NavroAuthError as exc:
        response = recorder.response
        status = response.status_code if response is not None else None
        message = _token_failure(exc, credentials, timeout)
        return TokenResult("token", Outcome.FAIL, message, status_code=status), None
    response = recorder.response
    assert response is not None and recorder.received_at is not None
    return _token_success(token, response, recorder.received_at), provider


def _token_success(token: Token, response: TransportResponse, received_at: float) -> TokenResult:
    date = response.headers.get("date")
    skew = _clock_skew(date, received_at)
    outcome = Outcome.OK
    if skew is None:
        clock = "no usable Date header: clock skew unknown"
    elif abs(skew) <= DATE_RESOLUTION:
        clock = f"clock skew {skew:+.1f} s (within the Date header's 1 s)"
    else:
        side = "ahead of" if skew > 0 else "behind"
        clock = f"clock skew {skew:+.1f} s (this machine is {side} the server)"
        if abs(skew) > CLOCK_SKEW_WARNING:
            outcome = Outcome.WARN
            clock += (
                f": sync this machine's clock (NTP); a shared token store allows "
                f"{STORE_CLOCK_SKEW:g} s"
            )
    message = (
        f"HTTP {response.status_code}, token {token.fingerprint} ({token.token_type}) lives "
        f"{token.expires_in:g} s, {clock}"
    )
    return TokenResult(
        "token",
        outcome,
        message,
        status_code=response.status_code,
        expires_in=token.expires_in,
        fingerprint=token.fingerprint,
        server_date=date,
        clock_skew=None if skew is None else round(skew, 3),
    )


def _clock_skew(date: Optional[str], received_at: float) -> Optional[float]:
    if not date:
        return None
    try:
        server = email.utils.parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # The Date header drops the fraction of its second: the server's time is half one more.
    return received_at - (server + DATE_RESOLUTION / 2)


def _token_failure(exc: NavroAuthError, credentials: Credentials, timeout: float) -> str:
    if isinstance(exc, InvalidClientError):
        return (
            "HTTP 401: Navro rejected the client id or secret: check both (NAVRO_CLIENT_ID, "
            "NAVRO_CLIENT_SECRET or the secret file); a secret reset in the Navro Hub "
            "replaces the old one, so use the new secret"
        )
    if isinstance(exc, TokenEndpointError):
        code = f"HTTP {exc.status_code}" + (f" {exc.error}" if exc.error else "")
        if exc.status_code == 404:
            return (
                f"{code}: no token endpoint for company {credentials.company!r} at "
                f"{credentials.token_url}: check NAVRO_COMPANY / --company and {_WHERE_URL}"
            )
        if exc.status_code == 429:
            return f"{code}: rate limited by the token endpoint: wait a little and run it again"
        if exc.status_code >= 500:
            return f"{code}: the token endpoint failed: run it again later; if it stays, ask Navro"
        return f"{code}: the token endpoint refused the request: check {_WHERE_URL}"
    if isinstance(exc, TokenResponseError):
        return (
            f"the answer is not a token ({exc}): check {_WHERE_URL} points at Navro's "
            "token endpoint (not a proxy's or a portal's page)"
        )
    if isinstance(exc, TokenTimeoutError):
        return f"no answer within {timeout:g} s: pass a longer --timeout, or check the network"
    if isinstance(exc, ConfigurationError):
        return f"{exc}: fix it"
    return f"{exc}: check the network path above"


# -- 7. api -----------------------------------------------------------------------------------


def check_api(
    url: str, provider: TokenProvider, context: Optional[ssl.SSLContext], *, timeout: float
) -> ApiResult:
    """One GET of ``url`` with the token, only if ``url`` is inside the API's origin."""
    auth = RequestAuth(provider)
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        scheme = ""
    if scheme not in ("http", "https"):
        return ApiResult(
            "api", Outcome.FAIL, "--api-url must be an absolute http(s) URL: fix it", url=url
        )
    if not auth.applies_to(url):
        message = (
            f"--api-url is not on the API base {provider.credentials.base_url}, and the token "
            "is only sent there: give a URL under it, or set NAVRO_BASE_URL / --base-url"
        )
        return ApiResult("api", Outcome.FAIL, message, url=url)
    headers: Dict[str, str] = {"Accept": "application/json"}
    auth.set_headers(headers, auth.token())
    handlers: List[urllib.request.BaseHandler] = [_NoRedirect()]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, headers=headers, method="GET")
    try:
        with opener.open(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
        exc.close()
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        message = f"GET {url} got no answer ({_describe(reason)}): check the URL and the network"
        return ApiResult("api", Outcome.FAIL, message, url=url)
    if 200 <= status < 300:
        return ApiResult(
            "api", Outcome.OK, f"GET {url}: HTTP {status}", url=url, status_code=status
        )
    fixes = {
        401: "the API refused the token: check the base URL is the API of this token's "
        "environment (--environment, NAVRO_BASE_URL)",
        403: "the token is valid but this client may not call it: check the service "
        "account's permissions in the Navro Hub",
        404: "no such API path: check --api-url",
    }
    if status in fixes:
        fix = fixes[status]
    elif 300 <= status < 400:
        fix = "a redirect, not followed (the token stays on its origin): use the final URL"
    elif status >= 500:
        fix = "the API failed: run it again later"
    else:
        fix = "check --api-url and the request it expects"
    message = f"GET {url}: HTTP {status}: {fix}"
    return ApiResult("api", Outcome.FAIL, message, url=url, status_code=status)


def _describe(reason: object) -> str:
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"certificate problem: {reason.verify_message}"
    if isinstance(reason, OSError) and reason.strerror:
        return f"{type(reason).__name__}: {reason.strerror}"
    return type(reason).__name__ if isinstance(reason, BaseException) else str(reason)


# -- running them -----------------------------------------------------------------------------

STEPS = ("credentials", "proxy", "dns", "tcp", "tls", "token", "api")


def run_doctor(options: DoctorOptions) -> List[StepResult]:
    """Every step in order; after a failure, the steps that depend on it are SKIP results."""
    results: List[StepResult] = []

    def skip_rest(reason: str) -> List[StepResult]:
        done = {result.step for result in results}
        results.extend(StepResult(step, Outcome.SKIP, reason) for step in STEPS if step not in done)
        return results

    credentials_result, credentials = check_credentials(options.environ)
    results.append(credentials_result)
    if credentials is None:
        return skip_rest("skipped: the credentials are not usable")

    scheme, host, port = _origin(credentials.token_url)
    proxy_result, proxy = check_proxy(credentials.token_url)
    results.append(proxy_result)
    if proxy_result.failed:
        return skip_rest("skipped: the proxy setting is not usable")

    where = _WHERE_URL if proxy is None else f"{scheme.upper()}_PROXY"
    connect_host, connect_port = (host, port) if proxy is None else (proxy.host, proxy.port)
    dns = check_dns(connect_host, connect_port, where=where)
    results.append(dns)
    if dns.failed:
        return skip_rest(f"skipped: {connect_host} does not resolve")
    tcp = check_tcp(dns.addresses, connect_port, timeout=options.timeout, where=where)
    results.append(tcp)
    if tcp.failed:
        return skip_rest(f"skipped: {connect_host}:{connect_port} is not reachable")

    trust = trust_in_use(options.ca_file)
    context: Optional[ssl.SSLContext] = None
    try:
        context = ssl_context_for(trust)
    except ConfigurationError as exc:
        context_error: Optional[str] = str(exc)
    else:
        context_error = None
    if scheme != "https":
        results.append(StepResult("tls", Outcome.SKIP, "skipped: the token URL is plain http"))
    elif context is None:
        results.append(TlsResult("tls", Outcome.FAIL, str(context_error), trust=trust.describe()))
        return skip_rest("skipped: no TLS")
    else:
        tls = check_tls(host, port, context, trust, timeout=options.timeout, proxy=proxy)
        results.append(tls)
        if tls.failed:
            return skip_rest("skipped: the TLS handshake failed")

    token_result, provider = check_token(credentials, context, timeout=options.timeout)
    results.append(token_result)
    if provider is None:
        return skip_rest("skipped: no token")

    if options.api_url is None:
        results.append(StepResult("api", Outcome.SKIP, "skipped: no --api-url given"))
    else:
        results.append(check_api(options.api_url, provider, context, timeout=options.timeout))
    return results


def _origin(url: str) -> Tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, parts.hostname or "", parts.port or (443 if scheme == "https" else 80)


def _join(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def exit_status(results: Sequence[StepResult]) -> int:
    """0 when no step failed, 1 otherwise."""
    return 1 if any(result.failed for result in results) else 0


_MARKS = {Outcome.OK: "ok", Outcome.WARN: "warn", Outcome.FAIL: "FAIL", Outcome.SKIP: "skip"}


def format_report(results: Sequence[StepResult]) -> str:
    """One line per step (``[mark] step  message``) and a last line with the verdict."""
    width = max(len(step) for step in STEPS)
    lines = [f"[{_MARKS[r.outcome]:>4}] {r.step:<{width}}  {r.message}" for r in results]
    failed = [r.step for r in results if r.failed]
    lines.append(f"failed at {failed[0]}" if failed else "all checks passed")
    return "\n".join(lines)


def report_json(results: Sequence[StepResult]) -> Dict[str, Any]:
    """The results for machines: ``{"ok": bool, "steps": [...]}``."""
    return {"ok": exit_status(results) == 0, "steps": [r.to_json() for r in results]}
