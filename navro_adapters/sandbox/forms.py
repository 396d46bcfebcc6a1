"""Decoding of token-request bodies: ``application/x-www-form-urlencoded`` or multipart.

Returns the fields as a plain mapping. Anything the sandbox cannot decode raises
:class:`FormError`, which becomes a 400 ``invalid_request``, never a 500.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple
from urllib.parse import parse_qsl

from .multipart import MultipartError, parse_multipart

__all__ = ["FormError", "parse_form"]

MAX_FIELDS = 64  # far beyond a token request's two or four fields
URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"


class FormError(ValueError):
    """The body could not be decoded as a form."""


def _urlencoded(body: bytes) -> List[Tuple[str, str]]:
    try:
        text = body.decode("utf-8")
        return parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=bool(text),
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise FormError("the body is not valid UTF-8 form-urlencoded data") from None


def parse_form(content_type: Optional[str], body: bytes) -> Dict[str, str]:
    """Decode a form body; each parameter may appear once (RFC 6749 section 3.2)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type == URLENCODED:
        pairs = _urlencoded(body)
    elif media_type == MULTIPART:
        try:
            pairs = parse_multipart(content_type or "", body)
        except MultipartError as exc:
            raise FormError(str(exc)) from None
    else:
        raise FormError(f"Content-Type must be {URLENCODED} or {MULTIPART}")
    fields: Dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise FormError(f"parameter {name!r} is repeated")
        fields[name] = value
    return fields
