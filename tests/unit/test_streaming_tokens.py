"""Streaming tokens: single use, expiry, bounded count."""

from __future__ import annotations

import pytest

from base.errors import ResourceExhausted
from cri.streaming.requests import EXEC, StreamRequest
from cri.streaming.tokens import TokenCache

REQ = StreamRequest(EXEC, "c" * 64, ("true",), stdout=True)


def test_a_token_is_consumed_by_its_first_use() -> None:
    cache = TokenCache()
    token = cache.insert(REQ)
    assert len(token) >= 16
    assert cache.consume(token) == REQ
    assert cache.consume(token) is None
    assert cache.consume("unknown") is None


def test_tokens_expire_and_free_their_place() -> None:
    now = [0.0]
    cache = TokenCache(ttl=60, capacity=2, clock=lambda: now[0])
    first = cache.insert(REQ)
    cache.insert(REQ)
    with pytest.raises(ResourceExhausted, match="2 streaming requests are pending"):
        cache.insert(REQ)
    now[0] = 60.0
    assert cache.consume(first) is None  # expired
    assert len(cache) == 0
    cache.insert(REQ)


def test_tokens_are_distinct() -> None:
    cache = TokenCache(capacity=1000)
    assert len({cache.insert(REQ) for _ in range(500)}) == 500
