"""What the runner maps over: a `Stage` (the protocol every per-clip stage follows), its work
`Item`s, and the `Part` of them one machine takes (`--part i/n`)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fd2talk.core.skip import PrepError


@dataclass(frozen=True)
class Item:
    """One unit of work: `key` names it (and its status file); `payload` is JSON-able.

    `group` decides which `--part` owns the item (default: the key). Every stage sets it
    to the manifest row's key, so all stages of one source run in the same part.
    """

    key: str
    payload: dict = field(default_factory=dict)
    group: str = ""


class Stage(Protocol):
    name: str  # "clip", "crop", ...: names the status folder
    out_dir: str  # folder under the work dir that holds the outputs
    config: Any  # a frozen dataclass; recorded in status/<name>/config.json
    # optional: `input_fields`, config fields that name inputs, not settings (not compared)

    def items(self, work: Path) -> list[Item]: ...

    def setup(self) -> None: ...  # load models; called once per worker process

    def process(self, item: Item, work: Path) -> list[str]: ...  # output paths, relative to work


@dataclass(frozen=True)
class Part:
    """Slice `index` of `count` (0-based), e.g. from `--part 3/8`."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> Part:
        if not text:
            return cls()
        try:
            i, n = (int(v) for v in text.split("/"))
        except ValueError:
            raise PrepError(f"--part {text!r}: expected i/n, e.g. 0/4") from None
        if n < 1 or not 0 <= i < n:
            raise PrepError(f"--part {text!r}: need 0 <= i < n")
        return cls(i, n)

    def owns(self, key: str) -> bool:
        return zlib.crc32(key.encode()) % self.count == self.index

    @property
    def whole(self) -> bool:
        return self.count == 1
