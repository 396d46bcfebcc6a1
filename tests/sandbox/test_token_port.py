"""``Sandbox(token_port=True)``: the token endpoint on a listening port of its own."""

from __future__ import annotations

import json
from typing import Iterator
from urllib.parse import urlsplit

import pytest

from navro_adapters import TokenProvider
from navro_adapters.sandbox import Sandbox

from .stdlib_client import call, get_token, ping, post_token


@pytest.fixture(params=[True, False], ids=["in-process", "child-process"])
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    with Sandbox(token_port=True, in_process=request.param) as sandbox:
        yield sandbox


def test_the_token_endpoint_has_its_own_port(sandbox: Sandbox) -> None:
    token_port = sandbox.token_port
    assert token_port is not None and token_port != sandbox.port
    assert urlsplit(sandbox.token_url).port == token_port
    assert urlsplit(sandbox.base_url).port == sandbox.port
    credentials = sandbox.credentials()
    assert (credentials.token_url, credentials.base_url) == (sandbox.token_url, sandbox.base_url)
    status, document = ping(sandbox, get_token(sandbox))
    assert status == 200 and document["ok"] is True


def test_only_the_token_port_serves_tokens(sandbox: Sandbox) -> None:
    on_api_port = sandbox.base_url + urlsplit(sandbox.token_url).path
    status, _, body = post_token(sandbox, url=on_api_port)
    assert (status, json.loads(body)) == (404, {"error": "not_found"})
    assert sandbox.stats().token_requests == 0  # no token endpoint was asked
    token = get_token(sandbox)
    origin = sandbox.token_url.split("/authentication/")[0]
    status, _, body = call(f"{origin}/v1/ping", headers={"Authorization": f"Bearer {token}"})
    assert (status, json.loads(body)) == (404, {"error": "not_found"})
    assert ping(sandbox, token)[0] == 200
    stats = sandbox.stats()
    assert (stats.token_requests, stats.tokens_issued, stats.api_requests) == (1, 1, 1)
    assert [seen.kind for seen in sandbox.requests_seen()] == ["other", "token", "other", "api"]


def test_a_token_provider_follows_the_credentials_to_the_token_port(sandbox: Sandbox) -> None:
    token = TokenProvider(sandbox.credentials()).get_token()
    assert ping(sandbox, token.access_token)[1]["client_id"] == sandbox.client_id
    assert [seen.kind for seen in sandbox.requests_seen()] == ["token", "api"]


def test_without_token_port_there_is_one_port() -> None:
    with Sandbox() as sandbox:
        assert sandbox.token_port is None
        assert sandbox.token_url.startswith(sandbox.base_url + "/authentication/")
