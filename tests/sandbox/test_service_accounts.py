"""Several service accounts of one company (Navro's "Additional Service Accounts")."""

from __future__ import annotations

import json
from typing import Iterator

import pytest

from navro_adapters import TokenProvider
from navro_adapters.sandbox import Sandbox, SandboxStats

from .stdlib_client import basic, call, get_token, ping, post_token

DEFAULT = "sandbox-client"
REPORTS = "reports-service"
REPORTS_SECRET = "reports-secret-value"


@pytest.fixture(params=[True, False], ids=["in-process", "child-process"])
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    with Sandbox(in_process=request.param) as sandbox:
        sandbox.add_client(REPORTS, REPORTS_SECRET)
        yield sandbox


def test_each_client_gets_its_own_tokens(sandbox: Sandbox) -> None:
    assert sandbox.client_ids == [DEFAULT, REPORTS]
    default_token, reports_token = get_token(sandbox), get_token(sandbox, REPORTS)
    assert default_token != reports_token
    assert ping(sandbox, default_token)[1]["client_id"] == DEFAULT
    assert ping(sandbox, reports_token)[1]["client_id"] == REPORTS
    stats = sandbox.stats()
    assert stats.token_requests_by_client == {DEFAULT: 1, REPORTS: 1}
    assert stats == SandboxStats(token_requests=2, tokens_issued=2, api_requests=2)


def test_credentials_name_the_client(sandbox: Sandbox) -> None:
    reports = sandbox.credentials(REPORTS)
    assert (reports.client_id, reports.client_secret) == (REPORTS, REPORTS_SECRET)
    assert reports.token_url == sandbox.credentials().token_url == sandbox.token_url
    assert sandbox.credentials().client_id == DEFAULT
    with pytest.raises(ValueError, match="no client 'nobody'"):
        sandbox.credentials("nobody")


def test_providers_per_client_each_carry_their_own_token(sandbox: Sandbox) -> None:
    owners = {}
    for client_id in (DEFAULT, REPORTS):
        token = TokenProvider(sandbox.credentials(client_id)).get_token()
        owners[client_id] = ping(sandbox, token.access_token)[1]["client_id"]
    assert owners == {DEFAULT: DEFAULT, REPORTS: REPORTS}


def test_resetting_one_secret_leaves_the_other_client_working(sandbox: Sandbox) -> None:
    old_reports_token = get_token(sandbox, REPORTS)
    sandbox.reset_secret("reports-rotated", client_id=REPORTS)
    status, _, body = post_token(sandbox, REPORTS, REPORTS_SECRET)
    assert (status, json.loads(body)["error"]) == (401, "invalid_client")
    assert sandbox.credentials(REPORTS).client_secret == "reports-rotated"
    assert ping(sandbox, get_token(sandbox, REPORTS))[1]["client_id"] == REPORTS
    assert ping(sandbox, get_token(sandbox))[1]["client_id"] == DEFAULT  # untouched
    assert sandbox.client_secret == "sandbox-secret"
    assert ping(sandbox, old_reports_token)[0] == 200  # issued tokens outlive a reset
    # One client's secret is never another's.
    assert post_token(sandbox, DEFAULT, "reports-rotated")[0] == 401
    assert sandbox.stats().token_requests_by_client == {DEFAULT: 2, REPORTS: 3}


def test_resetting_the_default_secret_leaves_added_clients_working(sandbox: Sandbox) -> None:
    sandbox.reset_secret("default-rotated")
    assert post_token(sandbox, DEFAULT, "sandbox-secret")[0] == 401
    assert get_token(sandbox) and get_token(sandbox, REPORTS)


def test_revoking_revokes_every_clients_tokens(sandbox: Sandbox) -> None:
    tokens = [get_token(sandbox), get_token(sandbox, REPORTS)]
    sandbox.revoke_all_tokens()
    assert [ping(sandbox, token)[0] for token in tokens] == [401, 401]


def test_per_client_counts_include_rejections_and_reset_to_zero(sandbox: Sandbox) -> None:
    post_token(sandbox, REPORTS, "wrong-secret")
    headers = {"X-API-Version": "1", "Authorization": basic("stranger", "x")}
    call(sandbox.token_url, "POST", b"grant_type=client_credentials&scope=openid", headers)
    stats = sandbox.stats()
    assert (stats.token_requests, stats.token_errors) == (2, 2)
    assert stats.token_requests_by_client == {DEFAULT: 0, REPORTS: 1}  # no key for strangers
    sandbox.reset_stats()
    assert sandbox.stats().token_requests_by_client == {DEFAULT: 0, REPORTS: 0}


@pytest.mark.parametrize(
    ("client_id", "secret", "message"),
    [
        (REPORTS, "another", "already registered"),
        (DEFAULT, "another", "already registered"),
        ("a:b", "secret", "must not contain ':'"),
        ("", "secret", "client_id must be a non-empty string"),
        ("ok", " ", "client_secret must be a non-empty string"),
    ],
)
def test_invalid_clients_are_rejected(
    sandbox: Sandbox, client_id: str, secret: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        sandbox.add_client(client_id, secret)
    assert sandbox.client_ids == [DEFAULT, REPORTS]


def test_resetting_an_unknown_clients_secret_is_a_value_error(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="no client 'nobody' is registered"):
        sandbox.reset_secret("whatever", client_id="nobody")


@pytest.mark.parametrize("in_process", [True, False])
def test_clients_added_before_start_are_served(in_process: bool) -> None:
    sandbox = Sandbox(in_process=in_process)
    sandbox.add_client(REPORTS, REPORTS_SECRET)
    with sandbox:
        assert ping(sandbox, get_token(sandbox, REPORTS))[1]["client_id"] == REPORTS
    with pytest.raises(RuntimeError):
        sandbox.add_client("late", "late-secret")
