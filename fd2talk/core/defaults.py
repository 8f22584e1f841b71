"""Option defaults from config dataclasses: every command line reads its defaults from the
dataclass its command builds (STYLE.md rule 6), so a default cannot differ between the CLI and
the library, and a setting added later counts as its default for older records."""

from __future__ import annotations

from dataclasses import MISSING, fields


def defaults(cls) -> dict:
    """{field: default} of a config dataclass; fields without a default (shards, out) are
    left out (and so are those with a default_factory)."""
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}
