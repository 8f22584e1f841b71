"""Config drift: a stage's settings are recorded in `status/<stage>/config.json`, and a run
with other settings over the same work dir is refused (nanoGPT-style resume check), or, with
`--force`, first drops every output the old settings made."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from fd2talk.core import atomic
from fd2talk.core.defaults import defaults as config_defaults
from fd2talk.core.skip import PrepError
from fd2talk.pipeline.runner.status import status_dir
from fd2talk.pipeline.runner.work import Stage

# Config fields that never shape an output: a re-run may change them freely.
NEUTRAL_FIELDS = ("timeout",)


def config_record(stage: Stage) -> dict:
    """The settings that shape the outputs (not inputs such as the manifest's path, nor
    timeouts)."""
    record = json.loads(json.dumps(dataclasses.asdict(stage.config), default=str))
    for name in (*getattr(stage, "input_fields", ()), *NEUTRAL_FIELDS):
        record.pop(name, None)
    return record


def check_config(stage: Stage, work: Path, force: bool) -> None:
    """Refuse to mix outputs of different configs (nanoGPT-style resume check)."""
    sdir = status_dir(work, stage.name)
    path = sdir / "config.json"
    current = config_record(stage)
    if path.is_file():
        previous = json.loads(path.read_text())
        # a setting added since the old outputs were made: what they were made with is the
        # config's LEGACY value for it (a check that did not run yet), else its default
        defaults = json.loads(json.dumps(config_defaults(type(stage.config)), default=str))
        defaults.update(getattr(stage.config, "LEGACY", {}))
        previous = {
            **{k: defaults[k] for k in current if k not in previous and k in defaults},
            **previous,
        }
        if previous != current and not force:
            diff = {
                k: (previous.get(k), current.get(k))
                for k in set(previous) | set(current)
                if previous.get(k) != current.get(k)
            }
            raise PrepError(
                f"{stage.name}: {work} holds outputs made with other settings {diff} "
                "(old, new); use a new work dir, the old settings, or --force to redo them"
            )
        if previous != current:
            # --force: drop every output the old settings made (sidecar json first, so no
            # later stage picks up a half-removed clip), then the records
            for rec_path in sorted(sdir.glob("*.json")):
                if rec_path.name in ("config.json", "summary.json", "state.json"):
                    continue
                outputs = json.loads(rec_path.read_text()).get("outputs") or []
                for rel in sorted(outputs, key=lambda o: not o.endswith(".json")):
                    (Path(work) / rel).unlink(missing_ok=True)
                rec_path.unlink()
    sdir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, current)
