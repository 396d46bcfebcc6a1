"""``multipart/form-data`` (RFC 7578) for text fields, parsed by the standard library's ``email``.

Navro's document says the token parameters may be sent as ``multipart/form-data``; the ``cgi``
module's parser is gone (Python 3.13), but a form is a MIME multipart, which ``email`` parses:
the request's ``Content-Type`` becomes the head of a MIME document whose body is the request
body. Only what a token request needs is supported: named text fields, each decoded as UTF-8.
Anything malformed (a defect ``email`` reports, a part that is not a named field, a value that
is not UTF-8) raises :class:`MultipartError`, which the sandbox turns into a 400.
"""

from __future__ import annotations

import email.errors
import email.policy
from email.headerregistry import BaseHeader, ContentDispositionHeader
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import List, Tuple

__all__ = ["MAX_PARTS", "MultipartError", "parse_multipart"]

MAX_PARTS = 64  # a token request has two fields; more is garbage, not a form
MAX_BOUNDARY_LENGTH = 70  # RFC 2046 section 5.1.1

_PARSER = BytesParser(policy=email.policy.HTTP)  # CRLF line ends, no line-length limit


class MultipartError(ValueError):
    """The body is not well-formed ``multipart/form-data``."""


def _document(content_type: str, body: bytes) -> EmailMessage:
    if "\r" in content_type or "\n" in content_type:  # it becomes a header line of its own
        raise MultipartError("malformed Content-Type")
    head = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n"
    message = _PARSER.parsebytes(head + body)
    assert isinstance(message, EmailMessage)  # what the email policies' factory builds
    return message


def _field(part: Message) -> Tuple[str, str]:
    """The ``(name, value)`` of one part; raises unless it is a named UTF-8 text field."""
    disposition = part["content-disposition"]  # parsed by the policy's header registry
    if isinstance(disposition, BaseHeader) and disposition.defects:  # e.g. a repeated name=
        raise MultipartError(f"malformed Content-Disposition: {disposition.defects[0]}")
    name = ""
    if (
        isinstance(disposition, ContentDispositionHeader)
        and disposition.content_disposition == "form-data"
    ):
        name = str(disposition.params.get("name") or "")
    if not name:
        raise MultipartError("part without Content-Disposition: form-data; name=...")
    value = None if part.is_multipart() else part.get_payload(decode=True)
    if not isinstance(value, bytes):
        raise MultipartError(f"field {name!r} is not text")
    if part.defects:  # decoding a transfer encoding records its defects on the part
        raise MultipartError(f"field {name!r} is malformed: {part.defects[0]!r}")
    try:
        return name, value.decode("utf-8")
    except UnicodeDecodeError:
        raise MultipartError(f"field {name!r} is not UTF-8") from None


def parse_multipart(content_type: str, body: bytes) -> List[Tuple[str, str]]:
    """The ``(name, value)`` fields of a multipart body, in order; a preamble and an epilogue
    are ignored."""
    try:
        message = _document(content_type, body)
        boundary = message.get_boundary()
        if not boundary or len(boundary) > MAX_BOUNDARY_LENGTH or not boundary.isascii():
            raise MultipartError("missing or invalid multipart boundary")
        if message.defects or not message.is_multipart():
            raise MultipartError("malformed multipart body")
        parts = list(message.iter_parts())
        if len(parts) > MAX_PARTS:
            raise MultipartError("too many multipart fields")
        return [_field(part) for part in parts]
    except MultipartError:
        raise
    except (ValueError, LookupError, email.errors.MessageError) as exc:  # hostile input
        raise MultipartError(f"malformed multipart body ({type(exc).__name__})") from None
