"""The fault matrix: every adapter flavour against every scripted fault, several callers at once.

Each cell opens a fresh driver (a cold provider built by the adapter itself, with its own
transport, under a small retry policy), applies one fault at the token endpoint or the API,
then sends ``CALLERS`` requests at once. For every cell it checks:

* the outcome: every caller got the expected response, or the expected typed error;
* no request was lost: each caller ended with a response or a ``NavroAuthError``, never an
  untyped library exception and never nothing;
* the deadline: no caller waited longer than the retry deadline (plus the provider's
  documented grace and scheduling slack), per token acquisition it had to wait for;
* the retry budget: token requests <= ``max_attempts`` x acquisitions, acquisitions <= callers,
  and the exact count where the fault makes it deterministic;
* leaks: no secret and no token in our log records, in the typed errors' messages and reprs, or
  in the repr of the adapter, client, provider, credentials and token.

The figures go to ``build/reliability/fault_matrix.json``; ``report.py`` tables them in
``RELIABILITY.md`` (``NAVRO_WRITE_REPORT=1``).
"""

from __future__ import annotations

import base64
import email.utils
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

import pytest

from navro_adapters import (
    Credentials,
    InvalidClientError,
    NavroAuthError,
    TokenEndpointError,
    TokenResponseError,
    TokenTimeoutError,
    TransportError,
)
from navro_adapters.sandbox import EchoServer, Fault, Sandbox
from navro_adapters.token import MAX_TOKEN_LIFETIME
from tests.compliance.drivers import Driver, Result

from .helpers import (
    DRIVER_NAMES,
    ROTATED_SECRET,
    SCHEDULING_SLACK,
    SECRET,
    SMALL_POLICY,
    WAIT_GRACE,
    adapter_objects,
    capture_all_logs,
    closed_port,
    driver_factory_or_skip,
    leaks_in,
    our_error_texts,
    provider_tokens,
    reset_sandbox,
    sandbox_issued_tokens,
    write_results,
)

CALLERS = 5  # concurrent requests per cell
FAKE_TOKEN = "fake-fault-token-c0ffee12345678"  # a token the sandbox never issued
PERSISTENT = 40  # copies of a persistent fault: more than any cell can consume

ROWS: List[Dict[str, Any]] = []


@dataclass
class Ctx:
    """What a cell's set-up may use, and what it leaves for the checks."""

    sb: Sandbox
    echo: EchoServer
    credentials: Optional[Credentials] = None  # None: the sandbox's own
    urls: List[str] = field(default_factory=list)
    unreplayable: bool = False
    api_before: int = 0  # API requests the server had seen when the callers started
    prime: bool = False  # send one request first, so a token is cached before the fault


@dataclass(frozen=True)
class Cell:
    name: str
    where: str  # "token" or "api"
    description: str
    setup: Callable[[Ctx], None]
    #: "200" / "401" (a response with that status), the exact error class expected, or a
    #: frozenset of allowed outcomes
    expect: Any
    #: inclusive range of token requests the cell should make after the set-up (None: budget only)
    token_requests: Optional[Tuple[int, int]] = None
    #: token acquisitions one caller may have to wait for, in sequence
    waits: int = 1
    check: Optional[Callable[[Ctx, Driver, List[Result]], List[str]]] = None
    prime: bool = False
    #: the set-up changes the credentials the driver is opened with, so it runs first
    before_open: bool = False
    #: the RFC 6749 error code every typed error must keep
    error_code: Optional[str] = None
    #: what callers get instead of ``expect`` where the client sends token requests in its own
    #: auth flow (httpx): the one caller whose request carried a token request that got no
    #: answer gets this typed error (the client gives up on that request), the others go on
    through_client: Optional[str] = None


def _ping(ctx: Ctx) -> str:
    return f"{ctx.sb.base_url}/v1/ping"


def _enqueue(*faults: Fault) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        ctx.sb.enqueue_token_faults(*faults)

    return setup


def _persistent(fault: Fault) -> Callable[[Ctx], None]:
    return _enqueue(*([fault] * PERSISTENT))


def _expires_in(value: Any) -> Callable[[Ctx], None]:
    body = {"access_token": FAKE_TOKEN, "token_type": "Bearer", "expires_in": value}
    return _persistent(Fault.json(body))


def _huge_expires_in(ctx: Ctx) -> None:
    ctx.sb.set_token_ttl(1e12)  # a real token the API accepts, with an absurd expires_in


def _check_capped(ctx: Ctx, driver: Driver, results: List[Result]) -> List[str]:
    token = driver.provider.token
    if token is None or token.expires_in != MAX_TOKEN_LIFETIME:
        return [f"expires_in 1e12 not capped at {MAX_TOKEN_LIFETIME}: {token!r}"]
    return []


def _retry_after_date(ctx: Ctx) -> None:
    when = email.utils.formatdate(math.floor(time.time()) + 1, usegmt=True)
    ctx.sb.enqueue_token_faults(Fault.status(429, retry_after=when))


def _conn_refused(ctx: Ctx) -> None:
    sb = ctx.sb
    ctx.credentials = Credentials(
        sb.client_id,
        SECRET,
        sb.company,
        base_url=sb.base_url,
        token_url=f"http://127.0.0.1:{closed_port()}/authentication/{sb.company}/token",
    )


def _secret_reset(ctx: Ctx) -> None:
    ctx.sb.reset_secret(ROTATED_SECRET)


def _api_401_once(ctx: Ctx) -> None:
    ctx.sb.enqueue_api_faults(Fault.status(401, body={"error": "invalid_token"}))


def _api_revoked(ctx: Ctx) -> None:
    ctx.sb.revoke_all_tokens()


def _api_always_401(ctx: Ctx) -> None:
    ctx.sb.set_api_always_401(True)


def _check_api_always_401(ctx: Ctx, driver: Driver, results: List[Result]) -> List[str]:
    api = ctx.sb.stats().api_requests - ctx.api_before
    if api != 2 * CALLERS:
        return [f"401 always: {api} API requests, expected exactly 2 per caller"]
    return []


def _redirect_away(ctx: Ctx) -> None:
    target = f"{ctx.echo.base_url}/landing"
    ctx.urls = [f"{ctx.sb.base_url}/v1/redirect?to={target}"] * CALLERS


def _absolute_away(ctx: Ctx) -> None:
    ctx.urls = [f"{ctx.echo.base_url}/elsewhere"] * CALLERS


def _check_echo_clean(ctx: Ctx, driver: Driver, results: List[Result]) -> List[str]:
    seen = ctx.echo.requests_seen()
    problems = []
    if len(seen) < CALLERS:
        problems.append(f"the other origin saw {len(seen)} request(s), expected {CALLERS}")
    tokens = sandbox_issued_tokens(ctx.sb) | provider_tokens(driver.provider)
    for request in seen:
        if "authorization" in request.headers:
            problems.append("a request to another origin carried an Authorization header")
        blob = repr(request.headers) + request.query + request.body.decode("latin-1")
        if leaks_in([blob], tokens):
            problems.append("a token reached another origin")
    return problems


def _one_shot(ctx: Ctx) -> None:
    ctx.sb.revoke_all_tokens()
    ctx.unreplayable = True


def _check_one_shot(ctx: Ctx, driver: Driver, results: List[Result]) -> List[str]:
    api = ctx.sb.stats().api_requests - ctx.api_before
    if api != CALLERS:
        return [f"one-shot bodies: {api} API requests for {CALLERS} callers (a stream was resent)"]
    return []


CELLS: List[Cell] = [
    # -- the token endpoint --------------------------------------------------------------------
    Cell(
        "latency>timeout",
        "token",
        "one answer 1 s late (attempt timeout 0.5 s), then normal",
        _enqueue(Fault.delay(1.0)),
        "200",
        (2, 2),
        through_client="TokenTimeoutError",
    ),
    Cell(
        "500,502,503,ok",
        "token",
        "500, 502, 503, then a token",
        _enqueue(Fault.status(500), Fault.status(502), Fault.status(503)),
        "200",
        (4, 4),
    ),
    Cell(
        "429 Retry-After: 1",
        "token",
        "429 with Retry-After in seconds, then a token",
        _enqueue(Fault.status(429, retry_after="1")),
        "200",
        (2, 2),
    ),
    Cell(
        "429 Retry-After: date",
        "token",
        "429 with Retry-After as an HTTP-date, then a token",
        _retry_after_date,
        "200",
        (2, 2),
    ),
    Cell(
        "429 Retry-After > deadline",
        "token",
        "429 asking for 60 s: surfaces at once",
        _persistent(Fault.status(429, retry_after="60")),
        TokenEndpointError,
    ),
    Cell(
        "503 persistent",
        "token",
        "503 on every attempt: the retry budget runs out",
        _persistent(Fault.status(503)),
        TokenEndpointError,
    ),
    Cell(
        "connection refused",
        "token",
        "nothing listens on the token URL's port",
        _conn_refused,
        TransportError,
        before_open=True,
    ),
    Cell(
        "reset mid-response",
        "token",
        "half a response, then RST; then a token",
        _enqueue(Fault.reset()),
        "200",
        (2, 2),
        through_client="TransportError",
    ),
    Cell(
        "dropped connection",
        "token",
        "connection closed without a byte; then a token",
        _enqueue(Fault.drop()),
        "200",
        (2, 2),
        through_client="TransportError",
    ),
    Cell(
        "hung once",
        "token",
        "accepts, never answers, once; then a token",
        _enqueue(Fault.hang()),
        "200",
        (2, 2),
        through_client="TokenTimeoutError",
    ),
    Cell(
        "hung server",
        "token",
        "accepts and never answers, every attempt",
        _persistent(Fault.hang()),
        TokenTimeoutError,
    ),
    Cell(
        "malformed JSON",
        "token",
        "200 with a truncated JSON body",
        _persistent(Fault.malformed_json()),
        TokenResponseError,
    ),
    Cell(
        "HTML 200",
        "token",
        "200 with an HTML error page (a captive portal)",
        _persistent(Fault.html()),
        TokenResponseError,
    ),
    Cell(
        "no access_token",
        "token",
        "200 JSON without access_token",
        _persistent(Fault.json({"token_type": "Bearer", "expires_in": 300})),
        TokenResponseError,
    ),
    Cell(
        'expires_in "abc"',
        "token",
        "expires_in is not a number",
        _expires_in("abc"),
        TokenResponseError,
    ),
    Cell("expires_in -5", "token", "a negative lifetime", _expires_in(-5), TokenResponseError),
    Cell("expires_in 0", "token", "a zero lifetime", _expires_in(0), TokenResponseError),
    Cell(
        "expires_in 1e12",
        "token",
        "an absurd lifetime: capped at 24 h, token used",
        _huge_expires_in,
        "200",
        (1, 1),
        check=_check_capped,
    ),
    Cell(
        "401 invalid_client",
        "token",
        "the secret was reset in the Navro Hub",
        _secret_reset,
        InvalidClientError,
    ),
    Cell(
        "400 invalid_scope",
        "token",
        "400 invalid_scope",
        _persistent(Fault.status(400, body={"error": "invalid_scope"})),
        TokenEndpointError,
        error_code="invalid_scope",
    ),
    # -- the API ----------------------------------------------------------------------------------
    Cell(
        "API 401 once",
        "api",
        "one 401 (token revoked server-side): refetch, resend once",
        _api_401_once,
        "200",
        (1, 1),
        waits=2,
        prime=True,
    ),
    Cell(
        "API tokens revoked",
        "api",
        "every cached token revoked: one refetch for all callers",
        _api_revoked,
        "200",
        (1, 1),
        waits=2,
        prime=True,
    ),
    Cell(
        "API 401 always",
        "api",
        "401 whatever the token: exactly two sends per caller",
        _api_always_401,
        "401",
        (2, 1 + CALLERS),
        waits=2,
        check=_check_api_always_401,
    ),
    Cell(
        "redirect to other origin",
        "api",
        "302 to another origin: followed without the token",
        _redirect_away,
        "200",
        (1, 1),
        check=_check_echo_clean,
    ),
    Cell(
        "absolute URL elsewhere",
        "api",
        "a request to another origin: never authenticated",
        _absolute_away,
        "200",
        (0, 0),
        check=_check_echo_clean,
    ),
    # Callers that start after the first 401 invalidated the token get a new one (200); those
    # that sent the revoked token get their 401 back. No stream is ever sent twice.
    Cell(
        "401 on one-shot stream",
        "api",
        "a generator body gets a 401: returned, not resent",
        _one_shot,
        frozenset({"401", "200"}),
        (0, 1),
        prime=True,
        check=_check_one_shot,
    ),
]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(client_secret=SECRET) as sb:
        yield sb


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


@pytest.fixture(scope="module", autouse=True)
def _write_rows() -> Iterator[None]:
    yield
    if ROWS:
        faults = sorted({row["fault"] for row in ROWS})
        write_results(
            "fault_matrix",
            {
                "cells": len(ROWS),
                "passed": sum(1 for row in ROWS if row["passed"]),
                "faults": faults,
                "drivers": sorted({row["driver"] for row in ROWS}),
                "callers_per_cell": CALLERS,
                "policy": {
                    "max_attempts": SMALL_POLICY.max_attempts,
                    "attempt_timeout": SMALL_POLICY.attempt_timeout,
                    "deadline": SMALL_POLICY.deadline,
                    "backoff_base": SMALL_POLICY.backoff_base,
                    "backoff_max": SMALL_POLICY.backoff_max,
                },
                "descriptions": {c.name: [c.where, c.description] for c in CELLS},
                "rows": ROWS,
            },
        )


def _expected(expect: Any) -> str:
    if isinstance(expect, str):
        return expect
    if isinstance(expect, frozenset):
        return "|".join(sorted(expect))
    return str(expect.__name__)


def _outcome(result: Result) -> str:
    if result.error is not None:
        return type(result.error).__name__
    return str(result.status)


def _summary(outcomes: List[str]) -> str:
    counts: Dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    return ", ".join(f"{name} x{count}" for name, count in sorted(counts.items()))


def _basic_header(client_id: str, secret: str) -> str:
    return base64.b64encode(f"{client_id}:{secret}".encode()).decode("ascii")


def _send(driver: Driver, ctx: Ctx) -> List[Result]:
    if ctx.unreplayable:
        with ThreadPoolExecutor(max_workers=CALLERS) as pool:
            futures = [pool.submit(driver.send_unreplayable, _ping(ctx)) for _ in range(CALLERS)]
            return [f.result() for f in futures]
    return driver.request_many("GET", ctx.urls or [_ping(ctx)] * CALLERS)


@pytest.mark.parametrize("driver_name", DRIVER_NAMES)
@pytest.mark.parametrize("cell", CELLS, ids=[c.name for c in CELLS])
def test_fault_cell(driver_name: str, cell: Cell, sandbox: Sandbox, echo: EchoServer) -> None:
    factory = driver_factory_or_skip(driver_name)
    reset_sandbox(sandbox)
    echo.clear()
    ctx = Ctx(sandbox, echo)
    problems: List[str] = []
    row: Dict[str, Any] = {"driver": driver_name, "fault": cell.name, "where": cell.where}
    driver: Driver = factory()
    errors: List[BaseException] = []
    needles: Set[str] = {SECRET, ROTATED_SECRET}
    outcomes: List[str] = []
    expected = _expected(cell.expect)
    lead_error = None
    if cell.through_client is not None and factory.token_requests_through_client:
        lead_error = cell.through_client
        expected = f"{expected}|{lead_error}"
    token_requests = flights = server_seen = 0
    elapsed = 0.0
    with capture_all_logs() as logs:
        if cell.before_open:
            cell.setup(ctx)
        driver.open(ctx.credentials or sandbox.credentials(), retry_policy=SMALL_POLICY)
        try:
            if cell.prime:
                first = driver.request("GET", _ping(ctx))
                assert first.status == 200, f"priming failed: {first!r}"
            if not cell.before_open:
                cell.setup(ctx)
            before = sandbox.stats()
            ctx.api_before = before.api_requests
            before_provider = driver.provider.stats
            flights_before = before_provider.acquisitions + before_provider.failures
            sent_before = before_provider.token_requests
            started = time.monotonic()
            results = _send(driver, ctx)
            elapsed = time.monotonic() - started
            after_provider = driver.provider.stats
            flights = after_provider.acquisitions + after_provider.failures - flights_before
            token_requests = after_provider.token_requests - sent_before
            server_seen = token_requests
            if ctx.credentials is None:
                # An attempt may time out before its request leaves (a loaded machine): the
                # server then sees fewer than the provider sent, never more.
                server_seen = sandbox.stats().token_requests - before.token_requests
                if server_seen > token_requests:
                    problems.append(
                        f"the server saw {server_seen} token requests, "
                        f"the provider sent only {token_requests}"
                    )
            # -- outcome and lost requests
            if len(results) != CALLERS:
                problems.append(f"{len(results)} results for {CALLERS} callers")
            outcomes = [_outcome(r) for r in results]
            for result in results:
                if result.error is not None:
                    errors.append(result.error)
                    if not isinstance(result.error, NavroAuthError):
                        problems.append(f"untyped error reached the caller: {result.error!r}")
                elif result.status is None:
                    problems.append("a caller got neither a response nor an error")
            if not set(outcomes) <= set(expected.split("|")) or not outcomes:
                problems.append(f"expected {expected} for every caller, got {_summary(outcomes)}")
            if lead_error is not None and outcomes.count(lead_error) > 1:
                problems.append(f"{outcomes.count(lead_error)} callers got {lead_error}, not 1")
            if cell.error_code is not None and any(
                getattr(e, "error", None) != cell.error_code for e in errors
            ):
                problems.append(f"the {cell.error_code} error code was not kept")
            # -- deadline
            bound = cell.waits * (SMALL_POLICY.deadline + WAIT_GRACE) + SCHEDULING_SLACK
            if elapsed > bound:
                problems.append(f"callers waited {elapsed:.2f} s, more than {bound:.2f} s")
            # -- retry budget
            if token_requests > SMALL_POLICY.max_attempts * max(flights, 1):
                problems.append(
                    f"{token_requests} token requests for {flights} acquisition(s): over budget"
                )
            if flights > CALLERS + (1 if cell.waits > 1 else 0):
                problems.append(f"{flights} acquisitions for {CALLERS} callers")
            if cell.token_requests is not None:
                low, high = cell.token_requests
                if not low <= server_seen <= high:
                    problems.append(f"{server_seen} token requests, expected {low}..{high}")
            if cell.check is not None:
                problems.extend(cell.check(ctx, driver, results))
            # -- leaks: everything printable now, while the objects are alive
            needles |= sandbox_issued_tokens(sandbox) | provider_tokens(driver.provider)
            needles |= {SECRET, ROTATED_SECRET, FAKE_TOKEN}
            needles.add(_basic_header(sandbox.client_id, SECRET))
            texts: List[str] = []
            for error in errors:
                texts.extend(our_error_texts(error))
            for obj in adapter_objects(driver):
                texts.extend([repr(obj), str(obj)])
            leaked = leaks_in(texts, needles)
            if leaked:
                problems.append(f"secret/token in an error or repr: {leaked[:3]}")
        finally:
            driver.close()
    ours = leaks_in(logs.texts(ours=True), needles)
    if ours:
        problems.append(f"secret/token in a navro_adapters log record: {ours[:3]}")
    row.update(
        {
            "outcome": _summary(outcomes),
            "expected": expected,
            "token_requests": token_requests,
            "server_token_requests": server_seen,
            "acquisitions": flights,
            "elapsed": round(elapsed, 3),
            "third_party_log_leaks": logs.third_party_leaks(needles),
            "error_types": sorted({type(e).__name__ for e in errors}),
            "passed": not problems,
            "problems": problems,
        }
    )
    ROWS.append(row)
    assert not problems, "\n".join(problems)
