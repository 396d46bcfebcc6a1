"""RedisStore against a real redis-server: TTLs, the lock, the async path, and Redis failing."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List

import pytest

from navro_adapters import TokenProvider, TokenStore
from navro_adapters.errors import ConfigurationError, TokenStoreError
from navro_adapters.sandbox import Sandbox
from navro_adapters.stores import RedisStore

from .conftest import REPO_ROOT, RedisServer, recording_threads

pytestmark = pytest.mark.redis

# Tests that need redis-py but no server (they point at closed or silent ports).
needs_redis_py = pytest.mark.skipif(
    importlib.util.find_spec("redis") is None and os.environ.get("CI") != "true",
    reason="redis-py is not installed (pip install 'navro-adapters[redis]')",
)

KEY = "k" * 40


def record(
    access_token: str = "tok-abc", *, lifetime: float = 300.0, age: float = 0.0
) -> Dict[str, Any]:
    issued_at = time.time() - age
    return {
        "access_token": access_token,
        "token_type": "Bearer",
        "scope": "openid",
        "issued_at": issued_at,
        "expires_at": issued_at + lifetime,
    }


@pytest.fixture
def store(redis_server: RedisServer, key_prefix: str) -> Iterator[RedisStore]:
    store = RedisStore(redis_server.url, key_prefix=key_prefix)
    yield store
    store.close()


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[Any]:
    client = redis_server.client()
    yield client
    client.close()


def warnings_from(caplog: pytest.LogCaptureFixture) -> List[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "navro_adapters" and r.levelno == logging.WARNING
    ]


# -- construction ---------------------------------------------------------------------------------


def test_importable_without_redis_py_and_constructing_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "from navro_adapters.stores import RedisStore, FileStore\n"
        "try:\n"
        "    RedisStore('redis://127.0.0.1:6379/0')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=True,
    )
    assert "pip install 'navro-adapters[redis]'" in result.stdout


def test_importing_the_stores_does_not_import_redis_py() -> None:
    code = "import sys\nimport navro_adapters.stores\nprint('redis' in sys.modules)\n"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=True,
    )
    assert result.stdout.strip() == "False"


@needs_redis_py
def test_configuration_and_repr_hide_the_password() -> None:
    store = RedisStore("redis://user:hunter2@127.0.0.1:6390/0", key_prefix="p:")
    assert "hunter2" not in repr(store)
    assert "127.0.0.1:6390" in repr(store)
    assert isinstance(store, TokenStore)
    with pytest.raises(ConfigurationError):
        RedisStore("")
    with pytest.raises(ConfigurationError):
        RedisStore(None)


# -- the basics -----------------------------------------------------------------------------------


def test_round_trip_and_key_layout(store: RedisStore, raw: Any, key_prefix: str) -> None:
    assert store.load(KEY) is None
    saved = record()
    store.save(KEY, saved, 60)
    assert store.load(KEY) == saved
    assert json.loads(raw.get(f"{key_prefix}token:{KEY}")) == saved


def test_the_ttl_is_server_side(store: RedisStore, raw: Any, key_prefix: str) -> None:
    store.save(KEY, record(), 0.3)
    pttl = raw.pttl(f"{key_prefix}token:{KEY}")
    assert 0 < pttl <= 300
    time.sleep(0.4)
    assert store.load(KEY) is None
    assert raw.exists(f"{key_prefix}token:{KEY}") == 0  # Redis dropped it, not the client


def test_a_corrupt_value_is_ignored_and_warned_once(
    store: RedisStore, raw: Any, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    raw.set(f"{key_prefix}token:{KEY}", b"\xff{garbage")
    with caplog.at_level(logging.WARNING, logger="navro_adapters"):
        assert store.load(KEY) is None
        assert store.load(KEY) is None
    assert len(warnings_from(caplog)) == 1
    store.save(KEY, record("tok-new"), 60)
    assert store.load(KEY)["access_token"] == "tok-new"  # type: ignore[index]


# -- the refresh lock -----------------------------------------------------------------------------


def test_lock_is_exclusive_and_compare_and_delete(
    store: RedisStore, raw: Any, key_prefix: str
) -> None:
    lock_key = f"{key_prefix}lock:{KEY}"
    assert store.try_lock(KEY, "alice", 30)
    assert not store.try_lock(KEY, "bob", 30)
    assert raw.get(lock_key) == b"alice"
    assert 0 < raw.pttl(lock_key) <= 30_000
    store.unlock(KEY, "bob")  # not bob's lock: it stays
    assert raw.get(lock_key) == b"alice"
    store.unlock(KEY, "alice")
    assert raw.exists(lock_key) == 0
    assert store.try_lock(KEY, "bob", 30)
    store.unlock(KEY, "bob")


def test_lock_expires_by_itself_and_a_late_holder_cannot_release_the_next(
    store: RedisStore, raw: Any, key_prefix: str
) -> None:
    assert store.try_lock(KEY, "alice", 0.2)
    time.sleep(0.3)
    assert store.try_lock(KEY, "bob", 30)
    store.unlock(KEY, "alice")
    assert raw.get(f"{key_prefix}lock:{KEY}") == b"bob"
    store.unlock(KEY, "bob")


def test_lock_race_between_threads_has_one_winner(store: RedisStore) -> None:
    winners: List[str] = []
    barrier = threading.Barrier(16)

    def contend(owner: str) -> None:
        barrier.wait()
        if store.try_lock(KEY, owner, 30):
            winners.append(owner)

    threads = [threading.Thread(target=contend, args=(f"owner-{i}",)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    store.unlock(KEY, winners[0])


def test_explicit_sync_client(redis_server: RedisServer, key_prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=1.0)
    store = RedisStore(client, key_prefix=key_prefix)
    saved = record()
    store.save(KEY, saved, 60)
    assert store.load(KEY) == saved  # str replies (decode_responses) work as well as bytes
    assert store.try_lock(KEY, "alice", 30)
    store.unlock(KEY, "alice")
    assert store.try_lock(KEY, "bob", 30)
    store.unlock(KEY, "bob")
    client.close()


def test_unlock_from_another_thread(store: RedisStore, raw: Any, key_prefix: str) -> None:
    # The async driver runs each store call on a worker thread: lock and unlock may differ.
    taken: List[bool] = []
    locker = threading.Thread(target=lambda: taken.append(store.try_lock(KEY, "alice", 30)))
    locker.start()
    locker.join()
    assert taken == [True]
    assert raw.get(f"{key_prefix}lock:{KEY}") == b"alice"
    unlocker = threading.Thread(target=store.unlock, args=(KEY, "alice"))
    unlocker.start()
    unlocker.join()
    assert raw.exists(f"{key_prefix}lock:{KEY}") == 0


def test_a_stale_owners_unlock_never_frees_its_successors_lock(
    redis_server: RedisServer, raw: Any, key_prefix: str
) -> None:
    late = RedisStore(redis_server.url, key_prefix=key_prefix)
    successor = RedisStore(redis_server.url, key_prefix=key_prefix)
    lock_key = f"{key_prefix}lock:{KEY}"
    assert late.try_lock(KEY, "alice", 0.2)
    time.sleep(0.3)  # Redis drops alice's lock
    assert successor.try_lock(KEY, "bob", 30)
    late.unlock(KEY, "alice")  # redis-py's release finds bob's token: not owned, swallowed
    late.unlock(KEY, "alice")  # again: nothing left to release
    assert raw.get(lock_key) == b"bob"
    assert 20_000 < raw.pttl(lock_key) <= 30_000
    successor.unlock(KEY, "bob")
    assert raw.exists(lock_key) == 0
    late.close()
    successor.close()


def test_an_expired_lock_nobody_took_is_nothing_to_release(
    store: RedisStore, raw: Any, key_prefix: str
) -> None:
    assert store.try_lock(KEY, "alice", 0.1)
    time.sleep(0.2)
    store.unlock(KEY, "alice")  # the key is gone: redis-py's LockNotOwnedError is swallowed
    assert raw.exists(f"{key_prefix}lock:{KEY}") == 0
    assert store.try_lock(KEY, "bob", 30)
    store.unlock(KEY, "bob")


def test_two_owners_in_one_process_exclude_each_other(
    redis_server: RedisServer, key_prefix: str
) -> None:
    one = RedisStore(redis_server.url, key_prefix=key_prefix)
    two = RedisStore(redis_server.url, key_prefix=key_prefix)
    assert one.try_lock(KEY, "alice", 30)
    assert not two.try_lock(KEY, "bob", 30)
    assert not one.try_lock(KEY, "carol", 30)
    two.unlock(KEY, "alice")  # not the store that took it: nothing happens
    assert not two.try_lock(KEY, "bob", 30)
    one.unlock(KEY, "alice")
    assert two.try_lock(KEY, "bob", 30)
    two.unlock(KEY, "bob")
    one.close()
    two.close()


# -- async ----------------------------------------------------------------------------------------


def test_the_store_is_sync_only(store: RedisStore) -> None:
    for name in ("aload", "asave", "atry_lock", "aunlock", "aclose"):
        assert not hasattr(store, name)


async def test_an_asyncio_client_is_refused(redis_server: RedisServer) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_server.url)
    with pytest.raises(ConfigurationError, match="asyncio"):
        RedisStore(client)
    await (getattr(client, "aclose", None) or client.close)()  # aclose() is redis-py >= 5.0.1


async def test_the_async_provider_runs_store_calls_off_the_event_loop(
    redis_server: RedisServer, key_prefix: str, raw: Any, sandbox: Sandbox
) -> None:
    Recording, threads = recording_threads(RedisStore)
    store = Recording(redis_server.url, key_prefix=key_prefix)
    await TokenProvider(sandbox.credentials(), store=store).aget_token()
    calls = list(threads)
    assert len(calls) == 4  # load, try_lock, load again under the lock, unlock
    assert threading.get_ident() not in calls
    key = sandbox.credentials().cache_key
    assert raw.exists(f"{key_prefix}token:{key}") == 1
    assert raw.exists(f"{key_prefix}lock:{key}") == 0  # released, maybe from another thread
    store.close()


def test_async_providers_on_several_event_loops(
    redis_server: RedisServer, key_prefix: str, sandbox: Sandbox
) -> None:
    store = RedisStore(redis_server.url, key_prefix=key_prefix)
    credentials = sandbox.credentials()

    async def fetch() -> str:
        return (await TokenProvider(credentials, store=store).aget_token()).access_token

    # One sync client serves every loop: nothing in the store belongs to an event loop.
    assert asyncio.run(fetch()) == asyncio.run(fetch())
    assert sandbox.stats().token_requests == 1
    store.close()


# -- providers sharing through Redis --------------------------------------------------------------


def test_two_providers_share_one_token_and_the_secret_never_reaches_redis(
    redis_server: RedisServer, key_prefix: str, raw: Any, sandbox: Sandbox
) -> None:
    credentials = sandbox.credentials()
    first = TokenProvider(credentials, store=RedisStore(redis_server.url, key_prefix=key_prefix))
    second = TokenProvider(credentials, store=RedisStore(redis_server.url, key_prefix=key_prefix))
    token = first.get_token()
    assert second.get_token().access_token == token.access_token
    assert sandbox.stats().token_requests == 1
    secret = credentials.client_secret.encode()
    basic = base64.b64encode(f"{credentials.client_id}:{credentials.client_secret}".encode())
    for name in raw.scan_iter(match=f"{key_prefix}*"):
        assert secret not in name
        value = raw.get(name) or b""
        assert secret not in value and basic not in value
    # The token lives in Redis no longer than the token itself.
    assert 0 < raw.pttl(f"{key_prefix}token:{credentials.cache_key}") <= token.expires_in * 1000


async def test_async_providers_share_one_token(
    redis_server: RedisServer, key_prefix: str, sandbox: Sandbox
) -> None:
    credentials = sandbox.credentials()
    first = TokenProvider(credentials, store=RedisStore(redis_server.url, key_prefix=key_prefix))
    second = TokenProvider(credentials, store=RedisStore(redis_server.url, key_prefix=key_prefix))
    token = await first.aget_token()
    assert (await second.aget_token()).access_token == token.access_token
    assert sandbox.stats().token_requests == 1


@pytest.mark.parametrize(
    ("age", "lifetime", "trusted"),
    [(290.0, 289.0, False), (10.0, 13.0, False), (100.0, 300.0, True)],
)
def test_clock_skew_margin(
    store: RedisStore, sandbox: Sandbox, age: float, lifetime: float, trusted: bool
) -> None:
    credentials = sandbox.credentials()
    # Redis would keep this record for an hour: only the record's own expiry protects us.
    store.save(credentials.cache_key, record("from-redis", lifetime=lifetime, age=age), 3600)
    token = TokenProvider(credentials, store=store, store_clock_skew=5.0).get_token()
    assert (token.access_token == "from-redis") is trusted
    assert sandbox.stats().token_requests == (0 if trusted else 1)


# -- Redis failing: the provider carries on -------------------------------------------------------


def _check_survives(
    provider: TokenProvider, sandbox: Sandbox, caplog: pytest.LogCaptureFixture, before: int
) -> float:
    with caplog.at_level(logging.WARNING, logger="navro_adapters"):
        started = time.monotonic()
        token = provider.get_token()
        elapsed = time.monotonic() - started
    assert token.access_token
    assert sandbox.stats().token_requests == before + 1
    assert any("store" in r.getMessage() for r in warnings_from(caplog))
    return elapsed


def test_redis_killed_mid_run(
    redis_factory: Callable[[], RedisServer], sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_factory()
    store = RedisStore(server.url)
    provider = TokenProvider(sandbox.credentials(), store=store)
    token = provider.get_token()
    assert store.load(sandbox.credentials().cache_key) is not None
    server.kill()
    assert provider.invalidate(token)
    elapsed = _check_survives(provider, sandbox, caplog, before=1)
    assert elapsed < 2.0
    assert provider.get_token().access_token != token.access_token


async def test_redis_killed_mid_run_async(
    redis_factory: Callable[[], RedisServer], sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_factory()
    provider = TokenProvider(sandbox.credentials(), store=RedisStore(server.url))
    token = await provider.aget_token()
    server.kill()
    provider.invalidate(token)
    with caplog.at_level(logging.WARNING, logger="navro_adapters"):
        again = await asyncio.wait_for(provider.aget_token(), 5.0)
    assert again.access_token != token.access_token
    assert sandbox.stats().token_requests == 2
    assert any("store" in r.getMessage() for r in warnings_from(caplog))


def test_every_method_raises_a_store_error_when_redis_dies(
    redis_factory: Callable[[], RedisServer],
) -> None:
    server = redis_factory()
    store = RedisStore(server.url)
    assert store.try_lock(KEY, "alice", 30)
    server.kill()
    calls: List[Callable[[], object]] = [
        lambda: store.load(KEY),
        lambda: store.save(KEY, record(), 60),
        lambda: store.try_lock(KEY, "bob", 30),
        lambda: store.unlock(KEY, "alice"),  # redis-py's release fails: a store error too
    ]
    for call in calls:
        with pytest.raises(TokenStoreError, match=r"^redis "):
            call()
    store.close()


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that accepts connections and never answers: a hung Redis."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: List[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    listener.close()


@needs_redis_py
def test_a_hung_redis_costs_a_bounded_delay(
    black_hole: int, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    provider = TokenProvider(
        sandbox.credentials(), store=RedisStore(f"redis://127.0.0.1:{black_hole}/0")
    )
    elapsed = _check_survives(provider, sandbox, caplog, before=0)
    # load times out (0.5 s), the flow gives up on the store and fetches directly.
    assert elapsed < 2.0


@needs_redis_py
def test_redis_down_from_the_start(sandbox: Sandbox, caplog: pytest.LogCaptureFixture) -> None:
    from .conftest import free_port

    provider = TokenProvider(
        sandbox.credentials(), store=RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    )
    assert _check_survives(provider, sandbox, caplog, before=0) < 2.0
    assert not any(sandbox.credentials().client_secret in r.getMessage() for r in caplog.records)
