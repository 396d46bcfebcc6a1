"""FileStore: round trips, expiry, the refresh lock across threads and processes, file safety."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import filelock
import pytest

from navro_adapters import TokenProvider, TokenStore
from navro_adapters.errors import ConfigurationError, TokenStoreError
from navro_adapters.sandbox import Sandbox
from navro_adapters.stores import FileStore

from .conftest import REPO_ROOT, recording_threads

KEY = "k" * 40
OTHER_KEY = "o" * 40


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
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "tokens.json")


def warnings_from(caplog: pytest.LogCaptureFixture) -> List[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "navro_adapters" and r.levelno == logging.WARNING
    ]


# -- the basics -----------------------------------------------------------------------------------


def test_implements_the_token_store_protocol(store: FileStore) -> None:
    assert isinstance(store, TokenStore)


def test_round_trip_and_several_keys_in_one_file(store: FileStore) -> None:
    assert store.load(KEY) is None
    first, second = record("tok-1"), record("tok-2")
    store.save(KEY, first, 60)
    store.save(OTHER_KEY, second, 60)
    assert store.load(KEY) == first
    assert store.load(OTHER_KEY) == second
    document = json.loads(Path(store.path).read_text())
    assert set(document["tokens"]) == {KEY, OTHER_KEY}
    # The record keeps the token's absolute wall-clock expiry.
    assert document["tokens"][KEY]["record"]["expires_at"] == first["expires_at"]


def test_a_record_is_dropped_after_its_ttl(store: FileStore) -> None:
    store.save(KEY, record(), 0.2)
    assert store.load(KEY) is not None
    time.sleep(0.3)
    assert store.load(KEY) is None
    store.save(OTHER_KEY, record(), 60)  # a save prunes expired entries
    assert KEY not in json.loads(Path(store.path).read_text())["tokens"]


def test_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        FileStore("")
    with pytest.raises(ConfigurationError):
        FileStore(tmp_path)  # a directory, not a file
    assert "tokens.json" in repr(FileStore(tmp_path / "tokens.json"))


def _run(code: str, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=True,
    )
    return result.stdout


def test_without_filelock_constructing_names_the_extra(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['filelock'] = None\n"
        "from navro_adapters.stores import FileStore\n"
        "try:\n"
        "    FileStore(sys.argv[1])\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    assert "pip install 'navro-adapters[file]'" in _run(code, str(tmp_path / "t.json"))


def test_importing_the_stores_does_not_import_filelock() -> None:
    code = "import sys\nimport navro_adapters.stores\nprint('filelock' in sys.modules)\n"
    assert _run(code).strip() == "False"


# -- the refresh lock -----------------------------------------------------------------------------


def test_lock_is_exclusive_and_only_its_owner_releases_it(store: FileStore) -> None:
    assert store.try_lock(KEY, "alice", 30)
    assert not store.try_lock(KEY, "bob", 30)
    store.unlock(KEY, "bob")  # not bob's: compare-and-delete leaves it
    assert not store.try_lock(KEY, "carol", 30)
    assert store.try_lock(OTHER_KEY, "bob", 30)  # locks are per key
    store.unlock(KEY, "alice")
    assert store.try_lock(KEY, "bob", 30)
    store.unlock(KEY, "bob")
    store.unlock(OTHER_KEY, "bob")


def test_lock_is_exclusive_between_two_store_objects(tmp_path: Path) -> None:
    one, two = FileStore(tmp_path / "t.json"), FileStore(tmp_path / "t.json")
    assert one.try_lock(KEY, "alice", 30)
    assert not two.try_lock(KEY, "bob", 30)
    one.unlock(KEY, "alice")
    assert two.try_lock(KEY, "bob", 30)
    two.unlock(KEY, "bob")


def test_lock_expires_and_the_late_holder_cannot_release_the_new_one(store: FileStore) -> None:
    assert store.try_lock(KEY, "alice", 0.2)
    assert not store.try_lock(KEY, "bob", 30)
    time.sleep(0.3)
    assert store.try_lock(KEY, "bob", 30)  # alice is past her ttl: taken over
    store.unlock(KEY, "alice")  # alice wakes up late: bob's lock stays
    assert not store.try_lock(KEY, "carol", 30)
    store.unlock(KEY, "bob")
    assert store.try_lock(KEY, "carol", 30)
    store.unlock(KEY, "carol")


def test_lock_threads_race_one_winner(store: FileStore) -> None:
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


def test_unlock_from_another_thread_frees_the_os_lock(store: FileStore) -> None:
    # The async driver runs each store call on a worker thread: lock and unlock may differ.
    taken: List[bool] = []
    locker = threading.Thread(target=lambda: taken.append(store.try_lock(KEY, "alice", 30)))
    locker.start()
    locker.join()
    assert taken == [True]
    peer = FileStore(store.path)  # another descriptor: it sees the OS lock, not our bookkeeping
    assert not peer.try_lock(KEY, "bob", 30)
    unlocker = threading.Thread(target=store.unlock, args=(KEY, "alice"))
    unlocker.start()
    unlocker.join()
    assert peer.try_lock(KEY, "bob", 30)
    peer.unlock(KEY, "bob")


def test_a_stale_owners_unlock_never_frees_its_successors_lock(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    late, successor, third = FileStore(path), FileStore(path), FileStore(path)
    assert late.try_lock(KEY, "alice", 0.2)
    time.sleep(0.3)
    assert successor.try_lock(KEY, "bob", 30)  # alice is alive but past her ttl: taken over
    late.unlock(KEY, "alice")  # alice wakes up and releases what she thinks is hers
    late.unlock(KEY, "alice")  # twice: still nothing of bob's is touched
    assert not third.try_lock(KEY, "carol", 30)
    assert not late.try_lock(KEY, "alice-again", 30)
    successor.unlock(KEY, "bob")
    assert third.try_lock(KEY, "carol", 30)
    third.unlock(KEY, "carol")


def test_the_holder_may_renew_its_lock(store: FileStore) -> None:
    assert store.try_lock(KEY, "alice", 0.2)
    assert store.try_lock(KEY, "alice", 30)  # the same owner again: a longer ttl, still held
    time.sleep(0.3)
    assert not FileStore(store.path).try_lock(KEY, "bob", 30)
    store.unlock(KEY, "alice")


LOCKER = """
import sys
from navro_adapters.stores import FileStore
store = FileStore(sys.argv[1])
taken = store.try_lock(sys.argv[2], sys.argv[3], float(sys.argv[4]))
print("locked" if taken else "busy", flush=True)
sys.stdin.read()  # hold the lock until the parent closes stdin (or kills us)
store.unlock(sys.argv[2], sys.argv[3])
"""


@pytest.fixture
def locker(store: FileStore) -> Iterator[Any]:
    """Start a process that takes the lock and holds it; yields a starter."""
    processes: List[subprocess.Popen[str]] = []
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))

    def start(owner: str, ttl: float = 30.0) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", LOCKER, store.path, KEY, owner, str(ttl)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(5)


def test_lock_is_exclusive_across_processes(store: FileStore, locker: Any) -> None:
    holder = locker("other-process")
    assert holder.stdout.readline().strip() == "locked"
    assert not store.try_lock(KEY, "me", 30)
    holder.stdin.close()  # the holder unlocks and exits
    holder.wait(5)
    assert store.try_lock(KEY, "me", 30)
    assert locker("another").stdout.readline().strip() == "busy"
    store.unlock(KEY, "me")


def test_a_sigkilled_holder_frees_the_lock_at_once(store: FileStore, locker: Any) -> None:
    holder = locker("doomed", ttl=3600.0)  # an expiry far away: only its death frees it
    assert holder.stdout.readline().strip() == "locked"
    assert not store.try_lock(KEY, "me", 30)
    holder.send_signal(signal.SIGKILL)
    holder.wait(5)
    assert store.try_lock(KEY, "me", 30)
    store.unlock(KEY, "me")


def test_a_live_holder_past_its_ttl_is_taken_over(store: FileStore, locker: Any) -> None:
    holder = locker("hung", ttl=0.3)
    assert holder.stdout.readline().strip() == "locked"
    assert not store.try_lock(KEY, "me", 30)
    time.sleep(0.4)
    assert store.try_lock(KEY, "me", 30)
    holder.stdin.close()  # the hung holder wakes up and unlocks: must not free our lock
    holder.wait(5)
    assert not FileStore(store.path).try_lock(KEY, "third", 30)
    store.unlock(KEY, "me")


def test_a_forked_child_does_not_inherit_the_lock(store: FileStore) -> None:
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    assert store.try_lock(KEY, "parent", 30)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its copy of the store holds nothing
        try:
            held = bool(store._held)
            os.write(write_end, b"held" if held else b"free")
        finally:
            os._exit(0)
    os.close(write_end)
    assert os.read(read_end, 8) == b"free"
    os.close(read_end)
    os.waitpid(pid, 0)
    store.unlock(KEY, "parent")
    assert store.try_lock(KEY, "after", 30)  # the child's exit left no lock behind
    store.unlock(KEY, "after")


# filelock before 4.0 unlocks a lock object collected in a forked child, for the parent too.
needs_fork_safe_filelock = pytest.mark.skipif(
    not hasattr(os, "fork") or int(filelock.__version__.split(".")[0]) < 4,
    reason="needs fork, and filelock 4.0 or later",
)


@needs_fork_safe_filelock
def test_a_forked_child_leaves_its_parents_lock_held(store: FileStore) -> None:
    assert store.try_lock(KEY, "parent", 30)
    pid = os.fork()
    if pid == 0:  # the child drops its copies of the parent's lock objects
        try:
            store.unlock(KEY, "parent")
            gc.collect()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert not FileStore(store.path).try_lock(KEY, "peer", 30)
    store.unlock(KEY, "parent")


FORKING_LOCKER = """
import os, sys, time
from navro_adapters.stores import FileStore
store = FileStore(sys.argv[1])
assert store.try_lock(sys.argv[2], "forking-parent", 3600)
if os.fork() == 0:  # a long-lived child (a gunicorn worker), its at-fork hooks now run
    print(os.getpid(), flush=True)
    time.sleep(60)
    os._exit(0)
sys.stdin.read()
"""


@needs_fork_safe_filelock
def test_a_sigkilled_holder_frees_the_lock_even_if_its_child_lives(store: FileStore) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    holder = subprocess.Popen(
        [sys.executable, "-c", FORKING_LOCKER, store.path, KEY],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert holder.stdout is not None
    child = int(holder.stdout.readline())
    try:
        assert not store.try_lock(KEY, "me", 30)
        holder.send_signal(signal.SIGKILL)
        holder.wait(5)
        assert store.try_lock(KEY, "me", 30)  # the child's inherited copies hold nothing
        store.unlock(KEY, "me")
    finally:
        os.kill(child, signal.SIGKILL)
        if holder.poll() is None:
            holder.kill()


# -- file safety ----------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o777])
def test_every_file_it_creates_is_0600_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    store = FileStore(tmp_path / "tokens.json")
    previous = os.umask(umask)
    try:
        store.save(KEY, record(), 60)
        assert store.try_lock(KEY, "me", 30)
        store.unlock(KEY, "me")
    finally:
        os.umask(previous)
    files = sorted(tmp_path.iterdir())
    assert {f.name for f in files} == {
        "tokens.json",
        "tokens.json.lock",
        Path(store._refresh_lock_path(KEY)).name,
        Path(store._owner_path(KEY)).name,
    }  # no temporary file left behind
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_a_loose_existing_lock_file_is_tightened(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "tokens.json")
    mutex = tmp_path / "tokens.json.lock"
    mutex.write_bytes(b"")
    mutex.chmod(0o666)
    store.save(KEY, record(), 60)
    assert stat.S_IMODE(mutex.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b"\xff\xfe\x00garbage",
        b"[1, 2, 3]",
        b'{"version": 99, "tokens": {}}',
    ],
    ids=["syntax", "empty", "binary", "list", "version"],
)
def test_a_corrupt_file_is_empty_warned_once_and_overwritten(
    store: FileStore, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    Path(store.path).write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="navro_adapters"):
        for _ in range(3):
            assert store.load(KEY) is None
    assert len(warnings_from(caplog)) == 1
    assert "corrupt" in warnings_from(caplog)[0].getMessage()
    saved = record("tok-new")
    store.save(KEY, saved, 60)
    assert store.load(KEY) == saved
    assert json.loads(Path(store.path).read_text())["version"] == 1


def test_a_truncated_file_is_treated_as_empty(
    store: FileStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.save(KEY, record(), 60)
    whole = Path(store.path).read_bytes()
    Path(store.path).write_bytes(whole[: len(whole) // 2])
    with caplog.at_level(logging.WARNING, logger="navro_adapters"):
        assert store.load(KEY) is None
        assert store.load(KEY) is None
    assert len(warnings_from(caplog)) == 1


def test_the_secret_is_never_written(tmp_path: Path, sandbox: Sandbox) -> None:
    credentials = sandbox.credentials()
    store = FileStore(tmp_path / "tokens.json")
    provider = TokenProvider(credentials, store=store)
    token = provider.get_token()
    secret = credentials.client_secret.encode()
    basic = base64.b64encode(f"{credentials.client_id}:{credentials.client_secret}".encode())
    everything = b"".join(path.read_bytes() for path in tmp_path.iterdir())
    assert token.access_token.encode() in Path(store.path).read_bytes()  # the token is stored
    assert secret not in everything
    assert basic not in everything
    assert credentials.cache_key in Path(store.path).read_text()  # keyed by the hashed identity


# -- async ----------------------------------------------------------------------------------------


async def test_the_async_provider_runs_store_calls_off_the_event_loop(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    Recording, threads = recording_threads(FileStore)
    store = Recording(tmp_path / "tokens.json")
    key = sandbox.credentials().cache_key
    token = await TokenProvider(sandbox.credentials(), store=store).aget_token()
    calls = list(threads)
    assert len(calls) == 4  # load, try_lock, load again under the lock, unlock
    assert threading.get_ident() not in calls
    assert FileStore(store.path).load(key)["access_token"] == token.access_token  # type: ignore[index]
    # The lock taken on a worker thread was released (maybe from another one): it is free.
    peer = FileStore(store.path)
    assert peer.try_lock(key, "peer", 30)
    peer.unlock(key, "peer")


def test_the_store_is_sync_only(store: FileStore) -> None:
    for name in ("aload", "asave", "atry_lock", "aunlock"):
        assert not hasattr(store, name)


async def test_async_provider_shares_through_the_file(tmp_path: Path, sandbox: Sandbox) -> None:
    credentials = sandbox.credentials()
    first = TokenProvider(credentials, store=FileStore(tmp_path / "tokens.json"))
    second = TokenProvider(credentials, store=FileStore(tmp_path / "tokens.json"))
    token = await first.aget_token()
    assert (await second.aget_token()).access_token == token.access_token
    assert sandbox.stats().token_requests == 1


# -- failure: the provider carries on without the store -------------------------------------------


def _assert_provider_survives(
    store: FileStore, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    provider = TokenProvider(sandbox.credentials(), store=store)
    with caplog.at_level(logging.WARNING, logger="navro_adapters"):
        token = provider.get_token()
        assert provider.invalidate(token)
        again = provider.get_token()
    assert again.access_token != token.access_token
    assert sandbox.stats().token_requests == 2
    assert any("store" in r.getMessage() for r in warnings_from(caplog))
    secret = sandbox.credentials().client_secret
    assert all(secret not in r.getMessage() for r in caplog.records)


def test_a_path_under_a_regular_file_fails_over_to_direct_fetches(
    tmp_path: Path, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "not-a-dir").write_text("")
    store = FileStore(tmp_path / "not-a-dir" / "tokens.json")
    with pytest.raises(TokenStoreError):
        store.save(KEY, record(), 60)
    _assert_provider_survives(store, sandbox, caplog)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores directory permissions"
)
def test_an_unwritable_directory_fails_over_to_direct_fetches(
    tmp_path: Path, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "read-only"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        _assert_provider_survives(FileStore(directory / "tokens.json"), sandbox, caplog)
    finally:
        directory.chmod(0o700)


def test_a_corrupt_file_does_not_stop_the_provider(
    tmp_path: Path, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens.json"
    path.write_bytes(b"\x00\x00\x00")
    provider = TokenProvider(sandbox.credentials(), store=FileStore(path))
    with caplog.at_level(logging.WARNING, logger="navro_adapters"):
        token = provider.get_token()
    assert json.loads(path.read_text())["tokens"]  # overwritten with the new token
    assert token.access_token in path.read_text()


# -- clock skew: a record at or near its expiry is never trusted ----------------------------------


@pytest.mark.parametrize(
    ("age", "lifetime", "trusted"),
    [
        (290.0, 289.0, False),  # expired a second ago
        (10.0, 13.0, False),  # 3 s left: inside the skew and refresh margins
        (3.7, 4.0, False),  # 0.3 s left of a short token: inside its 10% skew margin
        (1.0, 4.0, True),  # the skew margin is capped at 10% of the life: short tokens stay usable
        (100.0, 300.0, True),  # 200 s left: a good token
    ],
)
def test_clock_skew_margin(
    tmp_path: Path, sandbox: Sandbox, age: float, lifetime: float, trusted: bool
) -> None:
    credentials = sandbox.credentials()
    store = FileStore(tmp_path / "tokens.json")
    store.save(credentials.cache_key, record("from-the-store", lifetime=lifetime, age=age), 3600)
    provider = TokenProvider(credentials, store=store, store_clock_skew=5.0)
    token = provider.get_token()
    assert (token.access_token == "from-the-store") is trusted
    assert sandbox.stats().token_requests == (0 if trusted else 1)
    if not trusted:
        asyncio.run(_check_async_distrust(credentials, store))


async def _check_async_distrust(credentials: Any, store: FileStore) -> None:
    # The provider above saved a real token over it; put the bad record back and go async.
    store.save(credentials.cache_key, record("from-the-store", lifetime=289.0, age=290.0), 3600)
    provider = TokenProvider(credentials, store=store)
    assert (await provider.aget_token()).access_token != "from-the-store"
