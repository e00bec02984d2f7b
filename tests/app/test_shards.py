"""Shards: the stable hash, the config."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from app.config import ConfigError, load_config
from app.shards import ShardTable, shard_of

# symbol -> (first 8 bytes of SHA-256 of its UTF-8 name, as `sha256sum` prints them; its
# shard of 7, of 16, of 256). A client in any language must reproduce this table.
HASH_TABLE = {
    "0": ("5feceb66ffc86f38", 3, 8, 56),
    "1": ("6b86b273ff34fce1", 2, 1, 225),
    "2": ("d4735e3a265e16ee", 3, 14, 238),
    "17": ("4523540f1504cd17", 4, 7, 23),
    "999": ("83cf8b609de60036", 6, 6, 54),
    "AAPL": ("1eb44d625271a4eb", 1, 11, 235),
    "MSFT": (hashlib.sha256(b"MSFT").hexdigest()[:16], 2, 1, 225),
}


@pytest.mark.parametrize("symbol", sorted(HASH_TABLE))
def test_shard_of_is_the_documented_hash(symbol: str) -> None:
    prefix, of7, of16, of256 = HASH_TABLE[symbol]
    assert hashlib.sha256(symbol.encode()).hexdigest()[:16] == prefix
    assert (shard_of(symbol, 7), shard_of(symbol, 16), shard_of(symbol, 256)) == (of7, of16, of256)
    assert int(prefix, 16) % 16 == of16
    assert shard_of(symbol, 1) == 0


def test_an_id_is_its_decimal_name_and_the_table_agrees() -> None:
    assert shard_of(17, 16) == shard_of("17", 16) == 7
    table = ShardTable(1000, 16)
    ids = np.array([17, 0, 999, 17, 2], np.int32)
    assert table.of(ids).tolist() == [7, 8, 6, 7, 14]
    members = table.members(7)
    assert 17 in members and all(shard_of(int(s), 16) == 7 for s in members)
    sizes = [table.members(s).size for s in range(16)]
    assert sum(sizes) == 1000 and min(sizes) > 1000 / 16 / 2  # spread, not lumped


@pytest.mark.parametrize("shards", [0, -1, 4097])
def test_a_shard_count_out_of_range_is_refused(shards: int) -> None:
    with pytest.raises(ValueError, match=f"shards = {shards}: must be 1 to 4096"):
        shard_of("1", shards)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sharding.enabled": True}, "sharding.enabled: needs cache.redis"),
        ({"sharding.shards": 0}, "sharding.shards: "),
        (
            {"sharding.lease_ttl_s": 3, "sharding.renew_interval_s": 2},
            "sharding.renew_interval_s: must be at most a third of lease_ttl_s (3 s)",
        ),
        ({"sharding.advertise": "no port"}, "sharding.advertise: "),
    ],
)
def test_bad_sharding_config_names_the_key(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, overrides)
