"""Shared pieces of the reliability matrix: secrets, a small retry policy, log capture, leaks.

Everything here is test-only. The matrix reuses the compliance drivers (one per adapter
flavour) and writes its figures as JSON under ``build/reliability/``; ``report.py`` renders
them into ``RELIABILITY.md``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Set, Tuple

import navro_adapters.provider as provider_module
from navro_adapters import RetryPolicy, TokenProvider
from navro_adapters.sandbox import Sandbox
from tests.compliance.drivers import DRIVERS, Driver, library_missing, load_driver
from tests.conftest import SECRETS

#: The secrets this package uses; registered with the suite-wide log guard as well.
SECRET = "reliability-secret-7f3a9c01d2e4b5"
ROTATED_SECRET = "reliability-rotated-secret-88e1c0"
SECRETS.update({SECRET, ROTATED_SECRET})

#: A retry policy small enough that every cell of the matrix ends within a couple of seconds.
SMALL_POLICY = RetryPolicy(
    max_attempts=5, backoff_base=0.02, backoff_max=0.2, attempt_timeout=0.5, deadline=2.0
)
#: How long a waiter may outlive the flight's deadline, by design (provider._WAIT_GRACE).
WAIT_GRACE: float = getattr(provider_module, "_WAIT_GRACE", 0.5)
#: Scheduling slack on a loaded 2-core CI machine, on top of deadline + grace.
SCHEDULING_SLACK = 2.0

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO_ROOT / "build" / "reliability"
REPORT_PATH = REPO_ROOT / "RELIABILITY.md"

DRIVER_NAMES: List[str] = sorted(DRIVERS)
ASYNC_DRIVERS = frozenset({"httpx-async", "httpx2-async", "aiohttp", "authlib-async"})

#: Loggers whose records are captured at DEBUG. Ours must never carry a secret or a token;
#: third-party ones are reported, not asserted (their DEBUG output is not ours to change).
OUR_LOGGER = "navro_adapters"
THIRD_PARTY_LOGGERS = (
    "urllib3",
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore2",
    "hpack",
    "aiohttp",
    "authlib",
    "asyncio",
)

_BEARER_RE = re.compile(r"bearer\s+(\S+)", re.IGNORECASE)


def driver_factory_or_skip(name: str) -> Any:
    import pytest

    try:
        return load_driver(name)
    except ImportError as exc:
        if not library_missing(exc):
            raise  # a broken adapter or driver fails; only a missing library skips
        pytest.skip(f"{name}: {exc}")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def reset_sandbox(sb: Sandbox, secret: str = SECRET) -> None:
    """Bring a shared sandbox back to its defaults between cells."""
    sb.clear_faults()
    sb.set_api_always_401(False)
    sb.set_token_latency(0.0)
    sb.set_token_ttl(300.0)
    if sb.client_secret != secret:
        sb.reset_secret(secret)
    sb.revoke_all_tokens()
    sb.reset_stats()
    sb.clear_requests_seen()


# -- finding tokens and secrets ------------------------------------------------------------------


def sandbox_issued_tokens(sb: Sandbox) -> Set[str]:
    """Every token the sandbox knows of: seen on requests, plus its live table (in-process)."""
    tokens: Set[str] = set()
    for seen in sb.requests_seen():
        match = _BEARER_RE.search(seen.headers.get("authorization", ""))
        if match:
            tokens.add(match.group(1))
    control = getattr(sb, "_resources", None)
    state = getattr(getattr(control, "control", None), "_state", None)
    table = getattr(state, "_tokens", None)
    lock = getattr(state, "_lock", None)
    if isinstance(table, dict) and lock is not None:
        with lock:
            tokens.update(table)
    return tokens


def provider_tokens(*providers: Optional[TokenProvider]) -> Set[str]:
    return {p.token.access_token for p in providers if p is not None and p.token is not None}


def leaks_in(texts: Iterable[str], needles: Iterable[str]) -> List[Tuple[str, str]]:
    """``(needle shown as a fingerprint, excerpt)`` for each needle found in a text."""
    found: List[Tuple[str, str]] = []
    wanted = [n for n in set(needles) if n and len(n) >= 8]
    for text in texts:
        for needle in wanted:
            index = text.find(needle)
            if index >= 0:
                shown = needle[:3] + "..." + f"({len(needle)} chars)"
                excerpt = text[max(0, index - 40) : index].replace("\n", " ")
                found.append((shown, excerpt + "<NEEDLE>"))
    return found


def error_texts(error: BaseException) -> List[str]:
    """Message, repr and the whole cause/context chain's texts of an exception."""
    texts: List[str] = []
    seen: Set[int] = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts.append(str(current))
        texts.append(repr(current))
        current = current.__cause__ or current.__context__
    return texts


def our_error_texts(error: BaseException) -> List[str]:
    """Message and repr of the error itself (the chain may hold library exceptions)."""
    return [str(error), repr(error), repr(getattr(error, "args", ()))]


# -- capturing every log record ------------------------------------------------------------------


class LogCapture(logging.Handler):
    """Collects every record (formatted message, exception text) from every logger at DEBUG."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: List[Tuple[str, int, str]] = []
        self._formatter = logging.Formatter()
        self._lock_records = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:
            text = f"{record.msg!r} % {record.args!r}"
        if record.exc_info:
            text += "\n" + self._formatter.formatException(record.exc_info)
        with self._lock_records:
            self.records.append((record.name, record.levelno, text))

    def texts(self, *, ours: bool) -> List[str]:
        with self._lock_records:
            records = list(self.records)
        return [
            text
            for name, _, text in records
            if (name == OUR_LOGGER or name.startswith(OUR_LOGGER + ".")) == ours
        ]

    def by_logger(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        with self._lock_records:
            for name, _, _ in self.records:
                root = name.split(".")[0]
                counts[root] = counts.get(root, 0) + 1
        return counts

    def third_party_leaks(self, needles: Iterable[str]) -> Dict[str, int]:
        """Per third-party logger, how many records contained a secret or a token."""
        wanted = [n for n in set(needles) if n and len(n) >= 8]
        counts: Dict[str, int] = {}
        with self._lock_records:
            records = list(self.records)
        for name, _, text in records:
            if name == OUR_LOGGER or name.startswith(OUR_LOGGER + "."):
                continue
            if any(n in text for n in wanted):
                root = name.split(".")[0]
                counts[root] = counts.get(root, 0) + 1
        return counts


@contextlib.contextmanager
def capture_all_logs() -> Iterator[LogCapture]:
    """Attach a DEBUG handler to the root logger and turn every relevant logger to DEBUG."""
    handler = LogCapture()
    names = ("", OUR_LOGGER, *THIRD_PARTY_LOGGERS)
    saved = {name: logging.getLogger(name).level for name in names}
    root = logging.getLogger()
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


# -- reprs of everything a user can print ----------------------------------------------------------


def adapter_objects(driver: Driver) -> List[object]:
    """The adapter, client and provider objects a driver holds (whatever their names)."""
    objects: List[object] = []
    for attr in ("_auth", "_middleware", "_session", "_client"):
        value = getattr(driver, attr, None)
        if value is not None:
            objects.append(value)
    with contextlib.suppress(Exception):
        objects.append(driver.provider)
        objects.append(driver.provider.credentials)
        if driver.provider.token is not None:
            objects.append(driver.provider.token)
    return objects


# -- results ----------------------------------------------------------------------------------


def write_results(section: str, data: Any) -> Path:
    """Store one section's figures as JSON (read by report.py)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{section}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_results(section: str) -> Any:
    path = RESULTS_DIR / f"{section}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def want_report() -> bool:
    return os.environ.get("NAVRO_WRITE_REPORT", "") not in ("", "0")


def fd_count() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux
        return -1


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return -1
