"""Suite-wide set-up: hypothesis profiles, the soak switch, and a log guard for secrets.

Every test runs with the ``navro_adapters`` logger at DEBUG into a collecting handler; at
teardown no record may contain a secret registered in ``SECRETS`` (the ones the suite uses).
"""

from __future__ import annotations

import logging
import os
from typing import Iterator, List

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = ["pytester"]  # tests/test_testing_plugin.py runs inner pytest sessions

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default")
)

#: Secrets used by tests; the log guard fails a test whose logs contain any of them.
SECRETS = {
    "sandbox-secret",
    "compliance-secret-value-0123456789",
    "s3cr3t-value-never-logged",
    "a-brand-new-secret",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="run the long soak tests")


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="soak test: run with --soak (CI runs the short version)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
            if record.exc_info and record.exc_info[1] is not None:
                self.messages.append(repr(record.exc_info[1]))
        except Exception:  # a broken record must not break the guard
            self.messages.append(str(record.msg))


@pytest.fixture(autouse=True)
def secret_log_guard() -> Iterator[_Collect]:
    logger = logging.getLogger("navro_adapters")
    handler = _Collect()
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    for message in handler.messages:
        for secret in SECRETS:
            assert secret not in message, "a secret reached a log record"
