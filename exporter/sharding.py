"""Which shard probes which target: rendezvous (highest-random-weight) hashing of names.

Each target goes to the shard with the highest ``hash(shard, name)``. Shards together probe every
target exactly once, and going from COUNT N to N+1 moves only the ~1/(N+1) of targets whose new
highest weight is the new shard.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from exporter.config import Target

_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"2/5"`` -> Shard(2, 5); raises ValueError with a usable message."""
        m = _SHARD_RE.match(text)
        if not m:
            raise ValueError(f"{text!r} is not INDEX/COUNT (e.g. 0/3)")
        index, count = int(m.group(1)), int(m.group(2))
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"{text!r}: need 0 <= INDEX < COUNT and COUNT >= 1")
        return cls(index, count)

    @classmethod
    def from_env(cls, flag: str | None) -> Shard:
        text = flag or os.environ.get("VANTAGE_SHARD", "")
        return cls.parse(text) if text.strip() else cls()

    def owns(self, name: str) -> bool:
        return self.count == 1 or shard_of(name, self.count) == self.index

    def select(self, targets: Iterable[Target]) -> tuple[Target, ...]:
        return tuple(t for t in targets if self.owns(t.name))


def _weight(shard: int, name: str) -> int:
    digest = hashlib.blake2b(f"{shard}\x00{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def shard_of(name: str, count: int) -> int:
    """The shard (0..count-1) that owns ``name``."""
    return max(range(count), key=lambda i: _weight(i, name))
