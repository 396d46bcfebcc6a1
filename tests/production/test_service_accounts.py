"""Several service accounts of one company in one process never mix tokens, on every flavour.

Navro's "Additional Service Accounts": two client ids on one sandbox (``add_client``), two
adapters of the same flavour side by side, called at the same time. The sandbox's ``/v1/ping``
answers whose token it was (``client_id``), so each response proves which account's token the
request carried; ``token_requests_by_client`` proves each account fetched exactly one. With a
shared token store (one FileStore, one RedisStore on a real redis-server) the store keeps one
record per account and hands each account only its own, also to fresh providers.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, List

import pytest

from navro_adapters import InvalidClientError, TokenProvider
from navro_adapters.sandbox import Sandbox
from tests.compliance.drivers import Driver, Result
from tests.conftest import SECRETS

from .conftest import ping_url

PAYOUTS = "payouts-service"
REPORTS = "reports-service"
PAYOUTS_SECRET = "payouts-account-secret-9d2e"
REPORTS_SECRET = "reports-account-secret-31c7"
SECRETS.update({PAYOUTS_SECRET, REPORTS_SECRET})  # the log guard fails a test that logs one
CALLS = 20  # concurrent requests per account (threads or tasks, as the flavour does it)


def accounts_sandbox(reports_secret: str = REPORTS_SECRET) -> Sandbox:
    sandbox = Sandbox(client_id=PAYOUTS, client_secret=PAYOUTS_SECRET)
    sandbox.add_client(REPORTS, reports_secret)
    return sandbox


@pytest.fixture
def two_accounts() -> Iterator[Sandbox]:
    with accounts_sandbox() as sb:
        yield sb


def owners(results: List[Result]) -> List[str]:
    """The account whose token each request carried, as the API saw it."""
    errors = [r.error for r in results if r.error is not None]
    assert not errors, f"{len(errors)} request(s) failed, first: {errors[0]!r}"
    assert {r.status for r in results} == {200}
    return [r.json["client_id"] for r in results]


def ping_both_at_once(sb: Sandbox, payouts: Driver, reports: Driver) -> None:
    """Both accounts' requests at the same time; each must carry its own account's token."""
    urls = [ping_url(sb)] * CALLS
    with ThreadPoolExecutor(max_workers=2) as pool:
        payouts_calls = pool.submit(payouts.request_many, "GET", urls)
        reports_calls = pool.submit(reports.request_many, "GET", urls)
        assert owners(payouts_calls.result()) == [PAYOUTS] * CALLS
        assert owners(reports_calls.result()) == [REPORTS] * CALLS


def assert_one_token_each(sb: Sandbox) -> None:
    stats = sb.stats()
    assert dict(stats.token_requests_by_client) == {PAYOUTS: 1, REPORTS: 1}
    assert (stats.token_requests, stats.tokens_issued) == (2, 2)


def test_two_accounts_side_by_side_never_mix_tokens(
    open_driver: Callable[..., Driver], two_accounts: Sandbox
) -> None:
    sb = two_accounts
    payouts = open_driver(sb.credentials(client_id=PAYOUTS))
    reports = open_driver(sb.credentials(client_id=REPORTS))
    ping_both_at_once(sb, payouts, reports)
    ping_both_at_once(sb, payouts, reports)  # warm: the cached tokens, still apart
    assert_one_token_each(sb)
    payouts_token, reports_token = payouts.provider.token, reports.provider.token
    assert payouts_token is not None and reports_token is not None
    assert payouts_token.access_token != reports_token.access_token


def test_a_rejected_account_does_not_affect_the_other(
    open_driver: Callable[..., Driver], two_accounts: Sandbox
) -> None:
    sb = two_accounts
    payouts = open_driver(sb.credentials(client_id=PAYOUTS))
    reports = open_driver(sb.credentials(client_id=REPORTS))
    sb.reset_secret("a-brand-new-secret", client_id=REPORTS)  # the reports secret is now stale
    assert owners([payouts.request("GET", ping_url(sb))]) == [PAYOUTS]
    rejected = reports.request("GET", ping_url(sb))
    assert isinstance(rejected.error, InvalidClientError), repr(rejected.error)
    assert owners([payouts.request("GET", ping_url(sb))]) == [PAYOUTS]
    by_client = dict(sb.stats().token_requests_by_client)
    assert by_client == {PAYOUTS: 1, REPORTS: 1}  # one rejected fetch, no retry, no mix-up


# -- a shared token store --------------------------------------------------------------------------


@pytest.fixture(params=["file", "redis"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """One store of the kind per test: a FileStore, or a RedisStore on the real redis-server
    (skipped without one, failed under CI=true, as in tests/stores)."""
    stores: List[Any] = []

    def make() -> Any:
        if request.param == "file":
            from navro_adapters.stores import FileStore

            store: Any = FileStore(tmp_path / "tokens.json")
        else:
            from navro_adapters.stores import RedisStore

            server = request.getfixturevalue("redis_server")
            prefix = f"test:{request.node.name}:{time.monotonic_ns()}:"
            store = RedisStore(server.url, key_prefix=prefix)
        stores.append(store)
        return store

    try:
        yield make
    finally:
        for store in stores:
            close = getattr(store, "close", None)
            if close is not None:
                close()


@pytest.mark.parametrize("secrets", ["own-secrets", "same-secret"])
def test_two_accounts_sharing_one_store_never_mix_tokens(
    open_driver: Callable[..., Driver], store_factory: Callable[[], Any], secrets: str
) -> None:
    # Two accounts with the very same secret must still never share a store record.
    reports_secret = PAYOUTS_SECRET if secrets == "same-secret" else REPORTS_SECRET
    with accounts_sandbox(reports_secret) as sb:
        store = store_factory()
        payouts_credentials = sb.credentials(client_id=PAYOUTS)
        reports_credentials = sb.credentials(client_id=REPORTS)
        payouts_provider = TokenProvider(payouts_credentials, store=store)
        reports_provider = TokenProvider(reports_credentials, store=store)
        payouts = open_driver(payouts_provider)
        reports = open_driver(reports_provider)
        ping_both_at_once(sb, payouts, reports)
        assert_one_token_each(sb)

        # One record per account, each holding that account's own token.
        assert payouts_credentials.cache_key != reports_credentials.cache_key
        payouts_record = store.load(payouts_credentials.cache_key)
        reports_record = store.load(reports_credentials.cache_key)
        assert payouts_record is not None and reports_record is not None
        assert payouts_provider.token is not None and reports_provider.token is not None
        assert payouts_record["access_token"] == payouts_provider.token.access_token
        assert reports_record["access_token"] == reports_provider.token.access_token
        assert payouts_record["access_token"] != reports_record["access_token"]

        # Fresh providers on the same store (as another process would start) take each
        # account's token from it: no new token request, and still no mix-up.
        payouts_again = open_driver(TokenProvider(sb.credentials(client_id=PAYOUTS), store=store))
        reports_again = open_driver(TokenProvider(sb.credentials(client_id=REPORTS), store=store))
        ping_both_at_once(sb, payouts_again, reports_again)
        assert_one_token_each(sb)
