"""The library's logger and the one way a token may appear in a log line: a fingerprint."""

from __future__ import annotations

import hashlib
import logging

logger = logging.getLogger("navro_adapters")


def fingerprint(access_token: str) -> str:
    """A short, non-reversible tag for a token (8 hex digits of its SHA-256).

    Enough to tell two tokens apart in logs and reprs; useless to an attacker.
    """
    return hashlib.sha256(access_token.encode("utf-8", "surrogatepass")).hexdigest()[:8]


# A library never prints on its own: without this, Python's last-resort handler would write
# our warnings to stderr in applications that configured no logging.
logger.addHandler(logging.NullHandler())
