"""The driver interface the compliance suite runs against every adapter flavour.

A driver wraps one adapter on one HTTP library in one concurrency style and exposes the same
blocking calls, so one set of test functions covers them all. Async drivers own an event loop
on a private thread for their whole life (clients such as ``aiohttp.ClientSession`` belong to
one loop) and run each call's coroutines there.
"""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from navro_adapters import TokenProvider

AuthSource = Any  # Credentials | TokenProvider


@dataclass
class Result:
    """What one request ended with: a response (status, headers, JSON body) or an exception."""

    status: Optional[int] = None
    headers: Optional[Mapping[str, str]] = None
    json: Any = None
    error: Optional[BaseException] = None


class Driver(abc.ABC):
    #: "requests", "httpx-sync", "httpx-async", "httpx2-sync", ...
    name: str
    #: "threads" or "tasks": how request_many runs its requests at once
    concurrency: str
    #: can this flavour resend after a 401 (False only where the library gives no hook)
    supports_401_retry: bool = True

    @abc.abstractmethod
    def open(self, source: AuthSource, **adapter_kwargs: Any) -> None:
        """Build the adapter from Credentials or a TokenProvider, and a client using it."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the client (and the driver's loop/thread for async drivers)."""

    @abc.abstractmethod
    def request_many(
        self,
        method: str,
        urls: Sequence[str],
        *,
        headers: Optional[Mapping[str, str]] = None,
        body: Optional[bytes] = None,
        follow_redirects: bool = True,
    ) -> List[Result]:
        """Send one request per URL, all at once (threads or tasks), and return every result
        in order. An exception from a request becomes ``Result(error=exc)``; never raises."""

    @abc.abstractmethod
    def send_unreplayable(self, url: str) -> Result:
        """POST ``url`` with a one-shot streaming body (a generator / async generator)."""

    def request(self, method: str, url: str, **kwargs: Any) -> Result:
        return self.request_many(method, [url], **kwargs)[0]

    @property
    def provider(self) -> TokenProvider:
        """The TokenProvider the adapter uses (built or given)."""
        raise NotImplementedError


# name -> "module:Class"; a module whose HTTP library is missing is skipped with its reason.
DRIVERS: Dict[str, str] = {
    "requests": "tests.compliance.driver_requests:RequestsDriver",
    "httpx-sync": "tests.compliance.driver_httpx:HttpxSyncDriver",
    "httpx-async": "tests.compliance.driver_httpx:HttpxAsyncDriver",
    "httpx2-sync": "tests.compliance.driver_httpx:Httpx2SyncDriver",
    "httpx2-async": "tests.compliance.driver_httpx:Httpx2AsyncDriver",
    "aiohttp": "tests.compliance.driver_aiohttp:AiohttpDriver",
    "authlib-requests": "tests.compliance.driver_authlib:AuthlibRequestsDriver",
    "authlib-httpx": "tests.compliance.driver_authlib:AuthlibHttpxDriver",
    "authlib-async": "tests.compliance.driver_authlib:AuthlibAsyncDriver",
}


def load_driver(name: str) -> Callable[[], Driver]:
    module_name, _, class_name = DRIVERS[name].partition(":")
    module = importlib.import_module(module_name)
    factory: Callable[[], Driver] = getattr(module, class_name)
    return factory
