"""The sandbox's ``multipart/form-data`` parser (the standard library's ``email``), directly."""

from __future__ import annotations

import base64
from typing import List, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from navro_adapters.sandbox.forms import FormError, parse_form
from navro_adapters.sandbox.multipart import MAX_PARTS, MultipartError, parse_multipart

BOUNDARY = "XyZ-b0undary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def encode(fields: List[Tuple[str, str]], boundary: str = BOUNDARY) -> bytes:
    """A form as a browser or curl sends it: CRLF lines, a quoted name per part."""
    lines: List[bytes] = []
    for name, value in fields:
        lines += [
            f"--{boundary}".encode(),
            f'Content-Disposition: form-data; name="{name}"'.encode(),
            b"",
            value.encode("utf-8"),
        ]
    return b"\r\n".join([*lines, f"--{boundary}--".encode(), b""])


def part(headers: str, value: bytes) -> bytes:
    head = f"--{BOUNDARY}\r\n{headers}\r\n\r\n".encode()
    return head + value + f"\r\n--{BOUNDARY}--\r\n".encode()


def test_fields_come_back_in_order_with_their_exact_values() -> None:
    fields = [("grant_type", "client_credentials"), ("scope", "openid"), ("note", "a\r\nb\n ")]
    assert parse_multipart(CONTENT_TYPE, encode(fields)) == fields


def test_preamble_epilogue_quoted_boundary_and_charset_are_accepted() -> None:
    body = b"preamble\r\n" + encode([("scope", "openid")]) + b"epilogue"
    content_type = f'Multipart/Form-Data; charset=utf-8; boundary="{BOUNDARY}"'
    assert parse_multipart(content_type, body) == [("scope", "openid")]


def test_names_in_rfc_2231_form_and_utf8_values() -> None:
    body = part("Content-Disposition: FORM-DATA; name*=UTF-8''%C3%A9t%C3%A9", "été".encode())
    assert parse_multipart(CONTENT_TYPE, body) == [("été", "été")]


def test_an_empty_value_and_a_part_with_only_headers() -> None:
    assert parse_multipart(CONTENT_TYPE, part('Content-Disposition: form-data; name="a"', b""))
    only_headers = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="a"\r\n--{BOUNDARY}--'
    assert parse_multipart(CONTENT_TYPE, only_headers.encode()) == [("a", "")]


def test_a_base64_transfer_encoding_is_decoded() -> None:
    headers = 'Content-Disposition: form-data; name="scope"\r\nContent-Transfer-Encoding: base64'
    body = part(headers, base64.b64encode(b"openid"))
    assert parse_multipart(CONTENT_TYPE, body) == [("scope", "openid")]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", encode([("a", "b")])),
        ('multipart/form-data; boundary=""', encode([("a", "b")])),
        ("multipart/form-data; boundary=" + "x" * 71, encode([("a", "b")], "x" * 71)),
        ("multipart/form-data; boundary=a\r\nX-Injected: 1", encode([("a", "b")], "a")),
        (CONTENT_TYPE, b"no boundary anywhere"),
        (CONTENT_TYPE, part('Content-Disposition: form-data; name="a"', b"v")[:-20]),  # no close
        (CONTENT_TYPE, part("X-Nothing: here", b"v")),
        (CONTENT_TYPE, part("Content-Disposition: form-data", b"v")),
        (CONTENT_TYPE, part('Content-Disposition: attachment; name="a"', b"v")),
        (CONTENT_TYPE, part('Content-Disposition: form-data; name="a', b"v")),
        (CONTENT_TYPE, part('Content-Disposition: form-data; name="a"; name="b"', b"v")),
        (CONTENT_TYPE, part('Content-Disposition: form-data; name="a"', b"\xff\xfe")),
        (CONTENT_TYPE, part("No colon here", b"v")),
        (
            CONTENT_TYPE,
            part(
                'Content-Disposition: form-data; name="a"\r\nContent-Transfer-Encoding: base64',
                b"dg=",
            ),
        ),
        (
            CONTENT_TYPE,
            part(
                'Content-Disposition: form-data; name="a"\r\n'
                "Content-Type: multipart/mixed; boundary=inner",
                b"--inner\r\n\r\nx\r\n--inner--",
            ),
        ),
        (CONTENT_TYPE, encode([(f"f{index}", "v") for index in range(MAX_PARTS + 1)])),
    ],
)
def test_malformed_forms_raise_multipart_error(content_type: str, body: bytes) -> None:
    with pytest.raises(MultipartError):
        parse_multipart(content_type, body)


def test_parse_form_takes_multipart_and_refuses_repeated_fields() -> None:
    form = parse_form(CONTENT_TYPE, encode([("grant_type", "client_credentials"), ("scope", "x")]))
    assert form == {"grant_type": "client_credentials", "scope": "x"}
    with pytest.raises(FormError):
        parse_form(CONTENT_TYPE, encode([("scope", "a"), ("scope", "b")]))
    with pytest.raises(FormError):
        parse_form(CONTENT_TYPE, b"garbage")


_names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"\\'))


@settings(max_examples=200, deadline=None)
@given(
    fields=st.lists(
        st.tuples(_names.filter(bool), st.text(st.characters(exclude_categories=["Cs"]))),
        min_size=1,  # RFC 2046 5.1.1: a multipart has at least one part
        max_size=8,
    )
)
def test_whatever_a_client_encodes_comes_back(fields: List[Tuple[str, str]]) -> None:
    body = encode(fields)
    if any(f"--{BOUNDARY}".encode() in value.encode() for _, value in fields):
        return  # a value holding the delimiter is the client's bug (RFC 2046 5.1.1)
    assert parse_multipart(CONTENT_TYPE, body) == fields


@settings(max_examples=300, deadline=None)
@given(
    content_type=st.one_of(
        st.just(CONTENT_TYPE),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60).map(
            lambda text: f"multipart/form-data; {text}"
        ),
    ),
    body=st.one_of(
        st.binary(max_size=400),
        st.lists(st.sampled_from([
            f"--{BOUNDARY}".encode(), f"--{BOUNDARY}--".encode(), b"\r\n", b"\n", b"\r\n\r\n",
            b"Content-Disposition: form-data; name=", b'"a"', b"name*=", b"'", b";", b"\xff",
            b"Content-Transfer-Encoding: base64", b"quoted-printable", b"=3D", b"Content-Type: ",
            b"multipart/mixed; boundary=", b"text/plain; charset=", b"x",
        ]), max_size=40).map(b"".join),
    ),
)  # fmt: skip
def test_hostile_input_raises_only_multipart_error(content_type: str, body: bytes) -> None:
    try:
        fields = parse_multipart(content_type, body)
    except MultipartError:
        return
    assert all(isinstance(name, str) and isinstance(value, str) for name, value in fields)
