"""server/wire_json.py: msgspec where the text is plain JSON, the standard library where it
is not; what `json` alone reads is marked, and a request holding NaN or an infinity is a
400 (server/protocol.py's `parse`)."""

import json

import pytest

from server import wire_json
from server.errors import InvalidRequestError
from server.protocol import parse

PLAIN = [
    b'{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":8}',
    '{"a":"é ☃ \\u00e9","b":[1,2.5,-0.0,true,null],"c":{"d":{}}}'.encode(),
    b'{"a":1,"a":2}',  # the last of a repeated key, as json has it
    b'{"big":123456789012345678901234567890,"tiny":1e-320}',
    b'  {"spaced" : [ 1 , 2 ] }\n',
]


@pytest.mark.parametrize("raw", PLAIN)
def test_plain_json_is_read_as_json_reads_it_by_msgspec(raw: bytes) -> None:
    value, lax = wire_json.loads_lax(raw)
    assert value == json.loads(raw) and lax is False


@pytest.mark.parametrize(
    "raw",
    [
        '{"a":"é"}'.encode("utf-16"),  # json detects the encoding
        b'{"a":"\\ud800"}',  # a lone surrogate
        b'{"a":NaN}',
        b'{"a":-Infinity}',
        b'{"a":1e400}',  # past a double: json reads inf
        b'\xef\xbb\xbf{"a":1}',  # a UTF-8 byte-order mark
    ],
)
def test_what_only_json_reads_is_read_by_json_and_marked(raw: bytes) -> None:
    value, lax = wire_json.loads_lax(raw)
    assert lax is True
    assert json.dumps(value) == json.dumps(json.loads(raw))


@pytest.mark.parametrize("raw", [b"", b"{", b'{"a":}', b"nul", b'{"a":1}x'])
def test_what_neither_reads_raises_jsons_own_error(raw: bytes) -> None:
    with pytest.raises(json.JSONDecodeError):
        wire_json.loads(raw)


@pytest.mark.parametrize(
    "value",
    [{"a": [1, 2.5, "é", None, True]}, {"nested": {"x": [{"y": -0.0}]}}, {"big": 10**30}],
)
def test_dumps_round_trips(value: object) -> None:
    assert json.loads(wire_json.dumps(value)) == value


def test_dumps_writes_a_lone_surrogate_through_json() -> None:
    assert json.loads(wire_json.dumps({"a": "\ud800"})) == {"a": "\ud800"}


@pytest.mark.parametrize(
    ("value", "found"),
    [
        (1.0, False),
        (1e308, False),  # absurd, but a number JSON has
        (float("nan"), True),
        ({"a": [1, {"b": float("-inf")}]}, True),
        ({"a": [1, {"b": "NaN"}]}, False),  # a string, not a number
        ([], False),
    ],
)
def test_non_finite(value: object, found: bool) -> None:
    assert wire_json.non_finite(value) is found


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_a_request_with_nan_or_an_infinity_is_a_400(number: bytes) -> None:
    raw = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":%s}' % number
    with pytest.raises(InvalidRequestError) as e:
        parse("chat", raw)
    assert "NaN and Infinity are not JSON numbers" in e.value.message


def test_a_request_only_json_reads_is_served_otherwise() -> None:
    raw = '{"model":"m","messages":[{"role":"user","content":"é"}]}'.encode("utf-16")
    body, req = parse("chat", raw)
    assert body["messages"][0]["content"] == "é" and req.model == "m"
