"""Soak: many requests through each adapter while tokens rotate every couple of seconds.

The short version runs in the default suite (``SHORT_REQUESTS`` per adapter); the long one
(``LONG_REQUESTS`` per adapter) only with ``--soak``. Each checks that every request got 200,
that Python objects and RSS do not grow beyond a tolerance after warm-up, and that no file
descriptor is left open once the driver is closed. Figures go to ``build/reliability/``.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any, Dict, Iterator

import pytest

from navro_adapters.sandbox import Sandbox

from .helpers import (
    DRIVER_NAMES,
    SECRET,
    driver_factory_or_skip,
    fd_count,
    read_results,
    rss_bytes,
    write_results,
)

SHORT_REQUESTS = int(os.environ.get("NAVRO_SOAK_SHORT", "1000"))
LONG_REQUESTS = int(os.environ.get("NAVRO_SOAK_LONG", "100000"))
BATCH = 50  # requests sent at once (threads or tasks)
WARMUP = 200
TOKEN_TTL = 2.0  # seconds: a rotation every ~1.6 s (refresh ahead at 80 % of the lifetime)
OBJECT_GROWTH_LIMIT = 5_000  # live Python objects gained after warm-up, whatever the length
RSS_GROWTH_LIMIT = 32 * 1024 * 1024  # bytes; allocator noise, not a per-request leak
FD_SLACK = 2  # descriptors the runtime may open lazily (e.g. an epoll, a resolver socket)

FIGURES: Dict[str, Dict[str, Any]] = {}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    # In a child process: the server does not compete with the clients for this GIL.
    with Sandbox(client_secret=SECRET, token_ttl=TOKEN_TTL, in_process=False) as sb:
        yield sb


def _soak(driver_name: str, sandbox: Sandbox, total: int) -> Dict[str, Any]:
    factory = driver_factory_or_skip(driver_name)
    ping = f"{sandbox.base_url}/v1/ping"
    gc.collect()
    fds_before = fd_count()
    sandbox.reset_stats()
    driver = factory()
    driver.open(sandbox.credentials())
    errors = 0
    first_error = ""
    sent = 0
    try:
        for _ in range(max(1, WARMUP // BATCH)):
            driver.request_many("GET", [ping] * BATCH)
        gc.collect()
        objects_before, rss_before = len(gc.get_objects()), rss_bytes()
        started = time.monotonic()
        while sent < total:
            n = min(BATCH, total - sent)
            for result in driver.request_many("GET", [ping] * n):
                if result.error is not None or result.status != 200:
                    errors += 1
                    first_error = first_error or repr(result.error or result.status)
            sent += n
        elapsed = time.monotonic() - started
        gc.collect()
        objects_after, rss_after = len(gc.get_objects()), rss_bytes()
        provider_stats = driver.provider.stats
    finally:
        driver.close()
    gc.collect()
    time.sleep(0.2)  # closed sockets and finished threads release their descriptors
    fds_after = fd_count()
    stats = sandbox.stats()
    return {
        "requests": sent,
        "errors": errors,
        "first_error": first_error,
        "seconds": round(elapsed, 2),
        "requests_per_second": round(sent / elapsed) if elapsed else None,
        "token_rotations": provider_stats.acquisitions,
        "token_requests": stats.token_requests,
        "api_401s_absorbed": stats.api_401s,
        "object_growth": objects_after - objects_before,
        "rss_growth_mib": round((rss_after - rss_before) / 2**20, 2),
        "fds_before": fds_before,
        "fds_after_close": fds_after,
    }


def _check(figures: Dict[str, Any]) -> None:
    assert figures["errors"] == 0, figures
    assert figures["object_growth"] < OBJECT_GROWTH_LIMIT, figures
    assert figures["rss_growth_mib"] * 2**20 < RSS_GROWTH_LIMIT, figures
    if figures["fds_before"] >= 0:
        assert figures["fds_after_close"] <= figures["fds_before"] + FD_SLACK, figures


def _record(kind: str, driver_name: str, figures: Dict[str, Any]) -> None:
    section = f"soak_{kind}"
    stored = read_results(section) or {}
    stored[driver_name] = figures
    write_results(section, stored)


@pytest.mark.parametrize("driver_name", DRIVER_NAMES)
def test_short_soak(driver_name: str, sandbox: Sandbox) -> None:
    figures = _soak(driver_name, sandbox, SHORT_REQUESTS)
    _record("short", driver_name, figures)
    _check(figures)


@pytest.mark.soak
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("driver_name", DRIVER_NAMES)
def test_long_soak(driver_name: str, sandbox: Sandbox) -> None:
    figures = _soak(driver_name, sandbox, LONG_REQUESTS)
    _record("long", driver_name, figures)
    _check(figures)
    assert figures["token_rotations"] >= 2, figures
