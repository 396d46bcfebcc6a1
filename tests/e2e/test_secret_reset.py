"""A secret reset in the Navro Hub, against the real sandbox: fail fast, then recover with no
restart once the mounted secret file is updated."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator, List

import pytest

from navro_adapters import Credentials, InvalidClientError, TokenProvider
from navro_adapters.credentials import SecretFile
from navro_adapters.sandbox import Sandbox

OLD = "the-old-secret-0123456789"
NEW = "the-new-secret-9876543210"
THREADS = 20
SECONDS = 3.0


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(client_secret=OLD) as sb:
        yield sb


def mounted(sandbox: Sandbox, path: Path) -> Credentials:
    return Credentials(
        sandbox.client_id, SecretFile(path), sandbox.company, base_url=sandbox.base_url
    )


def hammer(provider: TokenProvider, seconds: float) -> List[BaseException]:
    """THREADS threads calling get_token for ``seconds``; every error they got."""
    errors: List[BaseException] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def caller() -> None:
        while time.monotonic() < stop_at:
            try:
                provider.get_token()
            except InvalidClientError as exc:
                with lock:
                    errors.append(exc)
            time.sleep(0.001)

    threads = [threading.Thread(target=caller) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return errors


def test_a_wrong_secret_costs_a_handful_of_token_requests_not_one_per_call(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    secret_file = tmp_path / "client-secret"
    secret_file.write_text("not-the-secret-at-all")
    provider = TokenProvider(mounted(sandbox, secret_file))
    errors = hammer(provider, SECONDS)
    # Back-offs of 1 s then 2 s: requests at about 0 s, 1 s and 3 s (the issue allows 6).
    assert sandbox.stats().token_requests <= 6
    assert len(errors) > THREADS * 10  # every call failed fast with the typed error
    assert all(isinstance(e, InvalidClientError) for e in errors)


def test_after_a_reset_updating_the_mounted_secret_recovers_without_a_restart(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(OLD + "\n")
    provider = TokenProvider(mounted(sandbox, secret_file))
    first = provider.get_token()
    sandbox.reset_secret(NEW)  # reset in the Navro Hub: the old secret now gets 401
    provider.invalidate(first)  # e.g. the API refused the token
    with pytest.raises(InvalidClientError) as caught:
        provider.get_token()
    assert OLD not in str(caught.value) and NEW not in repr(caught.value)
    secret_file.write_text(NEW + "\n")  # the orchestrator updates the mounted secret
    deadline = time.monotonic() + 5.0
    token = None
    while token is None and time.monotonic() < deadline:
        try:
            token = provider.get_token()  # a changed secret ends the back-off within ~1 s
        except InvalidClientError:
            time.sleep(0.05)
    assert token is not None and token != first
    assert sandbox.stats().token_requests <= 4


def test_the_secret_file_is_read_when_the_token_request_is_built(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(OLD)
    provider = TokenProvider(mounted(sandbox, secret_file))
    sandbox.reset_secret(NEW)
    secret_file.write_text(NEW)  # updated before our first token request even went out
    assert provider.get_token().access_token
    assert sandbox.stats().token_requests == 1
