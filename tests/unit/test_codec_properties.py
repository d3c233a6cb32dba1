"""Properties of the edge decoder on generated input (pure, no broker; a few seconds).

- Whatever the bytes, `decode` returns a dict or raises `Rejected` with a reason in REASONS.
- Every message from tests/strategies.py gets exactly the outcome its generator chose: valid
  builder events come back as the same dict, each fault as the reason the contract gives it.
"""
from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from strategies import (APPLIED, KINDS, OUTCOMES_OK, Clock, Ids, id_suffixes, long_chars, messages,
                        stamps, valid_bodies)
from streams.contract.codec import REASONS, Decoder, Rejected

NOW = 1767225600.0   # 2026-01-01T00:00:00Z: the decoders' fixed clock
DECODERS = {kind: Decoder(kind, clock=lambda: NOW) for kind in KINDS}
CLOCK = Clock.around(NOW)
CLOCK_VALID = (CLOCK.valid_min, CLOCK.valid_max)

PROPS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.large_base_example])

kinds = st.sampled_from(KINDS)
keys = st.one_of(st.none(), st.binary(max_size=20), st.text(max_size=20).map(str.encode))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 63), 2 ** 64 - 1),
              st.floats(allow_nan=False, allow_infinity=False), st.text()),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


def outcome(kind: str, key, value) -> str:
    """"applied" or the reason; anything but Rejected propagates and fails the test."""
    try:
        doc = DECODERS[kind].decode(key, value)
    except Rejected as err:
        assert err.reason in REASONS, err
        assert err.detail and "\n" not in err.detail
        return err.reason
    assert type(doc) is dict
    return APPLIED


@PROPS
@given(kinds, keys, st.one_of(st.none(), st.binary(max_size=200)))
def test_arbitrary_bytes_are_decoded_or_rejected(kind, key, value):
    outcome(kind, key, value)


@PROPS
@given(kinds, keys, json_values)
def test_arbitrary_json_is_decoded_or_rejected(kind, key, doc):
    outcome(kind, key, orjson.dumps(doc))


@st.composite
def contract_shaped(draw):
    """A valid event with some fields replaced by arbitrary JSON: near misses of every sort."""
    kind = draw(kinds)
    body = draw(valid_bodies(kind, Ids("u", [""], [""]), CLOCK))
    names = sorted(body) + ["event_type", "occurred_at", "promised_delivery_at", "order_ids"]
    body.update(draw(st.dictionaries(st.sampled_from(names), json_values, max_size=3)))
    return kind, draw(keys), orjson.dumps(body)


@PROPS
@given(contract_shaped())
def test_near_miss_events_are_decoded_or_rejected(case):
    outcome(*case)


@st.composite
def one_message(draw):
    ids = Ids("u", draw(st.lists(id_suffixes, min_size=1, max_size=3)),
              draw(st.lists(id_suffixes, min_size=1, max_size=3)), draw(long_chars))
    return draw(messages(ids, CLOCK))


@settings(PROPS, max_examples=300)
@given(one_message())
def test_each_generated_message_gets_the_outcome_its_generator_chose(msg):
    expect = APPLIED if msg.expect in OUTCOMES_OK else msg.expect
    event(expect)       # --hypothesis-show-statistics shows how often each outcome was tried
    assert outcome(msg.kind, msg.key, msg.value) == expect, msg.how
    if expect == APPLIED:
        assert DECODERS[msg.kind].decode(msg.key, msg.value) == orjson.loads(msg.value)


@settings(PROPS, max_examples=100)
@given(kinds, st.data())
def test_valid_builder_events_decode_to_themselves(kind, data):
    ids = Ids("u", [data.draw(id_suffixes)], [data.draw(id_suffixes)])
    body = data.draw(valid_bodies(kind, ids, CLOCK))
    key = body["order_id" if kind == "orders" else "shipment_id"].encode()
    assert DECODERS[kind].decode(key, orjson.dumps(body)) == body


@settings(PROPS, max_examples=20)
@given(kinds, stamps(*CLOCK_VALID), st.data())
def test_trailing_newline_in_occurred_at_is_a_bad_timestamp(kind, stamp, data):
    """The schema's pattern ends in '$', which (ECMA-262) a final newline does not match; a
    date-time string that fails its pattern is a bad_timestamp (streams/contract/codec.py)."""
    body = data.draw(valid_bodies(kind, Ids("u", [""], [""]), CLOCK))
    body["occurred_at"] = stamp + "\n"
    key = body["order_id" if kind == "orders" else "shipment_id"].encode()
    assert outcome(kind, key, orjson.dumps(body)) == "bad_timestamp"
