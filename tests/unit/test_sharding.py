"""Rendezvous sharding: disjoint, complete, and minimal movement when COUNT grows."""

from __future__ import annotations

import pytest

from exporter.config import load_config_text
from exporter.sharding import Shard, shard_of

NAMES = [f"svc-{i}.example.com/healthz" for i in range(3000)]


@pytest.mark.parametrize("count", range(1, 9))
def test_shards_are_disjoint_and_complete(count: int) -> None:
    owners = [[n for n in NAMES if Shard(i, count).owns(n)] for i in range(count)]
    assert sum(len(o) for o in owners) == len(NAMES)  # each name in exactly one shard
    assert set().union(*map(set, owners)) == set(NAMES)
    for o in owners:  # and roughly balanced
        assert abs(len(o) - len(NAMES) / count) < len(NAMES) / count * 0.2


@pytest.mark.parametrize("count", range(1, 8))
def test_growing_count_moves_about_one_in_n_plus_one(count: int) -> None:
    moved = sum(shard_of(n, count) != shard_of(n, count + 1) for n in NAMES)
    expected = len(NAMES) / (count + 1)
    assert moved <= expected * 1.2
    # and everything that moved went to the new shard
    assert all(shard_of(n, count + 1) == count for n in NAMES
               if shard_of(n, count) != shard_of(n, count + 1))


def test_parse_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Shard.parse("2/5") == Shard(2, 5)
    for bad in ("5/5", "-1/3", "1/0", "a/b", "3"):
        with pytest.raises(ValueError, match="INDEX"):
            Shard.parse(bad)
    monkeypatch.setenv("VANTAGE_SHARD", "1/3")
    assert Shard.from_env(None) == Shard(1, 3)
    assert Shard.from_env("0/2") == Shard(0, 2)  # the flag wins
    monkeypatch.delenv("VANTAGE_SHARD")
    assert Shard.from_env(None) == Shard(0, 1)


def test_select_filters_targets() -> None:
    cfg = load_config_text("targets:\n" + "".join(
        f"  - {{name: n{i}, url: 'http://127.0.0.1/{i}'}}\n" for i in range(50)))
    picked = [Shard(i, 3).select(cfg.targets) for i in range(3)]
    assert sorted(t.name for p in picked for t in p) == sorted(t.name for t in cfg.targets)
