"""The pure wire helpers of etcdmap.ops, and the watch stream's JSON splitter.

No server here: these are the encodings and parsers every request goes through.
"""

from __future__ import annotations

import json
from itertools import pairwise

import pytest
from helpers import call_log_of
from hypothesis import example, given
from hypothesis import strategies as st

from etcdmap import EtcdClient, EtcdProtocolError
from etcdmap._wire.replies import parse_kv, parse_range, parse_txn
from etcdmap._wire.stream import JSONStreamDecoder
from etcdmap.ops import (
    Compare,
    Delete,
    Put,
    Range,
    Txn,
    b64,
    prefix_end,
    subtract_points,
)
from etcdmap.records import DeleteRangeResponse, PutResponse, RangeResponse, TxnResponse

# Few distinct bytes, with the edge values, so prefixes and collisions are common.
EDGE_BYTES = st.sampled_from([0x00, 0x01, 0x61, 0x7F, 0xFE, 0xFF])
keys = st.lists(EDGE_BYTES, max_size=5).map(bytes)
nonempty_keys = st.lists(EDGE_BYTES, min_size=1, max_size=4).map(bytes)


def below_end(key: bytes, end: bytes) -> bool:
    """``key < end`` where an end of b"\\0" means "to the end of the keyspace"."""
    return end == b"\0" or key < end


# -- prefix_end -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "end"),
    [
        (b"a", b"b"),
        (b"a\xff", b"b"),
        (b"ab\xff\xff", b"ac"),
        (b"\xfe\xff", b"\xff"),
        (b"\xff\xff", b"\0"),
        (b"\xff", b"\0"),
        (b"", b"\0"),
        (b"\x00", b"\x01"),
    ],
)
def test_prefix_end_examples(prefix: bytes, end: bytes) -> None:
    assert prefix_end(prefix) == end


@given(prefix=keys, key=keys)
@example(prefix=b"", key=b"\x00")
@example(prefix=b"\xff\xff", key=b"\xff\xff\x01")
@example(prefix=b"\xff\xfe\xff", key=b"\xff\xff")
def test_prefix_end_covers_exactly_the_keys_with_the_prefix(prefix: bytes, key: bytes) -> None:
    end = prefix_end(prefix)
    assert key.startswith(prefix) == (prefix <= key and below_end(key, end))


@given(prefix=keys, suffix=keys)
def test_every_extension_of_a_prefix_is_inside_its_range(prefix: bytes, suffix: bytes) -> None:
    key = prefix + suffix
    assert prefix <= key and below_end(key, prefix_end(prefix))


# -- subtract_points ------------------------------------------------------------

span_ends = st.one_of(nonempty_keys, st.just(b"\0"))
spans = st.lists(st.tuples(nonempty_keys, span_ends), max_size=5)


def covered(ranges: list[tuple[bytes, bytes]], key: bytes) -> bool:
    return any(start <= key and below_end(key, end) for start, end in ranges)


@given(ranges=spans, points=st.lists(nonempty_keys, max_size=5), extra=st.lists(nonempty_keys))
@example(ranges=[(b"a", b"c")], points=[b"a", b"b"], extra=[b"a\x00", b"b\x00"])
@example(ranges=[(b"a", b"\0"), (b"b", b"c")], points=[b"b"], extra=[b"\xff\xff"])
def test_subtract_points_covers_the_ranges_minus_the_points(
    ranges: list[tuple[bytes, bytes]], points: list[bytes], extra: list[bytes]
) -> None:
    out = subtract_points(ranges, points)
    probes = set(extra) | set(points)
    for start, end in ranges + out:
        probes |= {start, start + b"\0", end, end + b"\0"}
    for key in probes:
        expected = covered(ranges, key) and key not in points
        assert covered(out, key) == expected, key


@given(ranges=spans, points=st.lists(nonempty_keys, max_size=5))
def test_subtract_points_returns_nonempty_sorted_disjoint_ranges(
    ranges: list[tuple[bytes, bytes]], points: list[bytes]
) -> None:
    out = subtract_points(ranges, points)
    for start, end in out:
        assert below_end(start, end), (start, end)
    for (_, end), (next_start, _) in pairwise(out):
        assert end != b"\0" and end <= next_start


def test_subtract_points_splits_a_range_around_a_point() -> None:
    assert subtract_points([(b"a", b"d")], [b"b"]) == [(b"a", b"b"), (b"b\0", b"d")]


# -- request payloads -----------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"sort_target": "BOGUS"}, {"sort_order": "UPWARDS"}, {"sort_target": 9}],
)
def test_range_rejects_an_invalid_sort_enum(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="sort"):
        Range(b"k", **kwargs)  # type: ignore[arg-type]


def test_an_invalid_sort_enum_is_rejected_before_anything_is_sent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with EtcdClient("http://etcd.invalid:2379") as client:
        sent = call_log_of(client, monkeypatch, full=True)
        with pytest.raises(ValueError):
            client.range("k", sort_order="ASCEND", sort_target="BOGUS")  # type: ignore[arg-type]
    assert sent == []


def test_compare_rejects_an_invalid_target() -> None:
    with pytest.raises(ValueError, match="target"):
        Compare(b"k", "SIZE", "==", 1)  # type: ignore[arg-type]


def test_compare_rejects_an_invalid_result() -> None:
    with pytest.raises(ValueError, match="result"):
        Compare(b"k", "VERSION", "=~", 1)


def test_a_value_compare_needs_bytes() -> None:
    with pytest.raises(TypeError):
        Compare(b"k", "VALUE", "==", 1)


@given(
    target=st.sampled_from(["VERSION", "CREATE", "MOD", "LEASE"]),
    result=st.sampled_from(["==", "!=", ">", "<", "EQUAL", "NOT_EQUAL", "GREATER", "LESS"]),
    operand=st.integers(0, 2**63 - 1),
)
def test_compare_to_wire_always_has_explicit_target_and_result(
    target: str, result: str, operand: int
) -> None:
    wire = Compare(b"k", target, result, operand).to_wire()  # type: ignore[arg-type]
    assert wire == {"key": "aw==", "target": target, "result": WIRE_RESULTS[result],
                    TARGET_FIELDS[target]: operand}


# What etcd's gateway expects, spelled out here rather than taken from etcdmap.ops.
WIRE_RESULTS = {"==": "EQUAL", "!=": "NOT_EQUAL", ">": "GREATER", "<": "LESS",
                "EQUAL": "EQUAL", "NOT_EQUAL": "NOT_EQUAL", "GREATER": "GREATER", "LESS": "LESS"}
TARGET_FIELDS = {"VERSION": "version", "CREATE": "create_revision", "MOD": "mod_revision",
                 "LEASE": "lease"}


def test_compare_version_zero_is_sent_explicitly() -> None:
    assert Compare(b"lock", "VERSION", "==", 0).to_wire() == {
        "key": b64(b"lock"), "target": "VERSION", "result": "EQUAL", "version": 0,
    }


def test_compare_value_is_base64_in_the_value_field() -> None:
    wire = Compare(b"k", "VALUE", "!=", b"\xff").to_wire()
    assert wire == {"key": "aw==", "target": "VALUE", "result": "NOT_EQUAL", "value": "/w=="}


def test_range_to_wire_sends_only_what_is_set() -> None:
    assert Range(b"k").to_wire() == {"key": "aw=="}
    assert Range(b"a", b"b", limit=2, revision=7, keys_only=True).to_wire() == {
        "key": "YQ==", "range_end": "Yg==", "limit": 2, "revision": 7, "keys_only": True,
    }


def test_put_and_delete_to_wire() -> None:
    assert Put(b"k", b"", lease=5, prev_kv=True).to_wire() == {
        "key": "aw==", "value": "", "lease": 5, "prev_kv": True,
    }
    assert Delete(b"a", b"\0").to_wire() == {"key": "YQ==", "range_end": "AA=="}


def test_txn_wraps_each_op_in_its_request_name() -> None:
    txn = Txn(
        [Compare(b"k", "MOD", ">", 3)],
        [Put(b"k", b"v"), Delete(b"k"), Txn()],
        [Range(b"k")],
    )
    wire = txn.to_wire()
    assert [list(op) for op in wire["success"]] == [
        ["request_put"], ["request_delete_range"], ["request_txn"],
    ]
    assert wire["failure"] == [{"request_range": {"key": "aw=="}}]
    assert wire["compare"][0]["mod_revision"] == 3


# -- response parsers -----------------------------------------------------------


def test_parse_range_of_no_match_has_no_kvs_and_count_zero() -> None:
    resp = parse_range({"header": {"revision": "12"}})
    assert resp == RangeResponse(kvs=(), count=0, more=False, revision=12)


def test_parse_range_reads_int64_strings() -> None:
    resp = parse_range({
        "header": {"revision": "9223372036854775807"},
        "kvs": [{"key": "Zm9v", "create_revision": "2", "mod_revision": "3",
                 "version": "2", "value": "YmFy", "lease": "7587858000000001"}],
        "count": "5",
        "more": True,
    })
    assert resp.revision == 2**63 - 1
    assert resp.count == 5 and resp.more is True
    kv = resp.kvs[0]
    assert (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease) == (
        b"foo", b"bar", 2, 3, 2, 7587858000000001,
    )


def test_parse_kv_of_a_keys_only_entry_has_an_empty_value_and_no_lease() -> None:
    kv = parse_kv({"key": "Zm9v", "create_revision": "2", "mod_revision": "2", "version": "1"})
    assert kv.value == b"" and kv.lease == 0


def test_parse_txn_of_a_failed_compare_has_succeeded_false() -> None:
    resp = parse_txn({
        "header": {"revision": "31"},
        "responses": [{"response_range": {"header": {"revision": "31"},
                                          "kvs": [{"key": "bG9jazE=", "value": "bWU="}],
                                          "count": "1"}}],
    })
    assert resp.succeeded is False
    assert resp.revision == 31
    (inner,) = resp.responses
    assert isinstance(inner, RangeResponse) and inner.kvs[0].value == b"me"


def test_parse_txn_of_a_success_reads_every_response_kind() -> None:
    resp = parse_txn({
        "header": {"revision": "40"},
        "succeeded": True,
        "responses": [
            {"response_put": {"header": {"revision": "40"}}},
            {"response_delete_range": {"header": {"revision": "40"}}},
            {"response_txn": {"header": {}, "succeeded": True, "responses": []}},
        ],
    })
    assert resp.succeeded is True
    put, delete, nested = resp.responses
    assert put == PutResponse(revision=40)
    assert delete == DeleteRangeResponse(revision=40, deleted=0)
    assert nested == TxnResponse(succeeded=True, revision=40)


def test_parse_txn_with_no_responses_field() -> None:
    assert parse_txn({"header": {"revision": "3"}}) == TxnResponse(succeeded=False, revision=3)


@pytest.mark.parametrize(
    "body",
    [
        {"kvs": {"key": "Zm9v"}},
        {"kvs": [{"key": "not base64!"}]},
        {"kvs": [{"key": "__79"}]},
        {"kvs": ["Zm9v"]},
        {"count": "many"},
        {"count": 1.5},
    ],
)
def test_parse_range_rejects_malformed_bodies_with_a_protocol_error(body: dict) -> None:
    with pytest.raises(EtcdProtocolError):
        parse_range(body)


# -- JSONStreamDecoder ----------------------------------------------------------

# Non-ASCII of every UTF-8 width: 2 (é), 3 (€, 日), 4 (𝄞) bytes.
text = st.text(alphabet=st.sampled_from("ab \"\\/é€日𝄞\t{}[]:,"), max_size=30)
long_text = st.builds(lambda s, n: s * n, st.text(alphabet="x€𝄞é", min_size=1, max_size=3),
                      st.integers(700, 2000))
messages = st.lists(
    st.fixed_dictionaries({"result": st.fixed_dictionaries({
        "n": st.integers(-(2**63), 2**64),
        "text": st.one_of(text, long_text),
        "list": st.lists(text, max_size=3),
    })}),
    min_size=1, max_size=5,
)


def encode_stream(values: list[object]) -> bytes:
    return b"".join(json.dumps(v, ensure_ascii=False).encode() + b"\n" for v in values)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


@given(values=messages, data=st.data())
def test_stream_decoder_returns_exactly_the_objects_however_the_bytes_are_split(
    values: list[object], data: st.DataObject
) -> None:
    stream = encode_stream(values)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    decoder = JSONStreamDecoder()
    out: list[object] = []
    for chunk in split_at(stream, cuts):
        out.extend(decoder.feed(chunk))
    out.extend(decoder.close())
    assert out == values


def test_stream_decoder_handles_a_split_inside_a_multibyte_character() -> None:
    stream = encode_stream([{"v": "€"}, {"v": "𝄞"}])
    decoder = JSONStreamDecoder()
    euro = stream.index("€".encode())
    clef = stream.index("𝄞".encode())
    out: list[object] = []
    for chunk in split_at(stream, [euro + 1, euro + 2, clef + 3]):
        out.extend(decoder.feed(chunk))
    assert out + decoder.close() == [{"v": "€"}, {"v": "𝄞"}]


def test_stream_decoder_returns_each_object_as_soon_as_its_newline_arrives() -> None:
    decoder = JSONStreamDecoder()
    assert decoder.feed(b'{"a":1}\n{"b":') == [{"a": 1}]
    assert decoder.feed(b"2}") == []
    assert decoder.feed(b"\n") == [{"b": 2}]
    assert decoder.close() == []


@given(values=messages, data=st.data())
def test_stream_decoder_close_raises_on_a_truncated_stream(
    values: list[object], data: st.DataObject
) -> None:
    stream = encode_stream(values)
    last_close = stream.rstrip(b"\n").rindex(b"}")  # any cut before it leaves an open object
    start_of_last = len(encode_stream(values[:-1]))
    cut = data.draw(st.integers(start_of_last + 1, last_close))
    decoder = JSONStreamDecoder()
    out = decoder.feed(stream[:cut])
    assert out == values[:-1]
    with pytest.raises(EtcdProtocolError):
        decoder.close()


def test_stream_decoder_close_raises_when_cut_inside_a_multibyte_character() -> None:
    stream = encode_stream([{"v": "€"}])
    decoder = JSONStreamDecoder()
    decoder.feed(stream[: stream.index("€".encode()) + 1])
    with pytest.raises(EtcdProtocolError):
        decoder.close()


def test_stream_decoder_raises_on_a_garbage_line_before_a_message() -> None:
    decoder = JSONStreamDecoder()
    with pytest.raises(EtcdProtocolError):
        decoder.feed(b"<html>502 Bad Gateway</html>\n")
        decoder.feed(b'{"result":{}}\n')


def test_stream_decoder_raises_on_a_garbage_line_at_the_end() -> None:
    decoder = JSONStreamDecoder()
    decoder.feed(b"<html>502 Bad Gateway</html>\n")
    with pytest.raises(EtcdProtocolError):
        decoder.close()
