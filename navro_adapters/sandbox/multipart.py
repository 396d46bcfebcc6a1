"""A strict, small ``multipart/form-data`` parser (RFC 7578) for text fields.

Navro's document says the token parameters may be sent as ``multipart/form-data``; the standard
library lost its parser with the ``cgi`` module (removed in Python 3.13). Only what a token
request needs is supported: named text fields, each decoded as UTF-8. Anything malformed raises
:class:`MultipartError`, which the sandbox turns into a 400.
"""

from __future__ import annotations

from email.message import Message
from email.utils import collapse_rfc2231_value
from typing import List, Tuple

__all__ = ["MAX_PARTS", "MultipartError", "parse_multipart"]

MAX_PARTS = 64  # a token request has two fields; more is garbage, not a form
MAX_BOUNDARY_LENGTH = 70  # RFC 2046 section 5.1.1

_CRLF = b"\r\n"


class MultipartError(ValueError):
    """The body is not well-formed ``multipart/form-data``."""


def _header_param(header_name: str, value: str, param: str) -> Tuple[str, str]:
    """The lower-cased main value of a header and one of its parameters ('' when absent)."""
    message = Message()
    message[header_name] = value
    main = message.get(header_name, "").split(";", 1)[0].strip().lower()
    raw = message.get_param(param, header=header_name)
    if raw is None or raw == "":
        return main, ""
    return main, collapse_rfc2231_value(raw)


def boundary_of(content_type: str) -> str:
    """The ``boundary`` parameter of a multipart Content-Type; raises if missing or invalid."""
    _, boundary = _header_param("content-type", content_type, "boundary")
    if not boundary or len(boundary) > MAX_BOUNDARY_LENGTH or not boundary.isascii():
        raise MultipartError("missing or invalid multipart boundary")
    return boundary


def _parse_part(part: bytes) -> Tuple[str, str]:
    if part.startswith(_CRLF):
        raw_headers, body = b"", part[2:]
    else:
        raw_headers, sep, body = part.partition(_CRLF + _CRLF)
        if not sep:
            raise MultipartError("part headers are not terminated")
    name = ""
    disposition = ""
    for line in raw_headers.split(_CRLF):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise MultipartError("part header is not UTF-8") from None
        header, colon, value = text.partition(":")
        if not colon or not header.strip():
            raise MultipartError("malformed part header")
        if header.strip().lower() == "content-disposition":
            disposition, name = _header_param("content-disposition", value.strip(), "name")
    if disposition != "form-data" or not name:
        raise MultipartError("part without Content-Disposition: form-data; name=...")
    try:
        return name, body.decode("utf-8")
    except UnicodeDecodeError:
        raise MultipartError(f"field {name!r} is not UTF-8") from None


def parse_multipart(body: bytes, boundary: str) -> List[Tuple[str, str]]:
    """The ``(name, value)`` fields of a multipart body, in order."""
    delimiter = b"--" + boundary.encode("ascii")
    if body.startswith(delimiter):
        position = len(delimiter)
    else:  # a preamble is allowed, and ignored
        start = body.find(_CRLF + delimiter)
        if start < 0:
            raise MultipartError("no multipart boundary in body")
        position = start + 2 + len(delimiter)
    fields: List[Tuple[str, str]] = []
    while True:
        if body.startswith(b"--", position):
            return fields  # the close delimiter; any epilogue is ignored
        line_end = body.find(_CRLF, position)
        if line_end < 0 or body[position:line_end].strip(b" \t"):
            raise MultipartError("malformed multipart boundary line")
        part_start = line_end + 2
        part_end = body.find(_CRLF + delimiter, part_start)
        if part_end < 0:
            raise MultipartError("unterminated multipart body")
        fields.append(_parse_part(body[part_start:part_end]))
        if len(fields) > MAX_PARTS:
            raise MultipartError("too many multipart fields")
        position = part_end + 2 + len(delimiter)
