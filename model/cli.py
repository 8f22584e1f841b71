"""`fd2talk-train` and `fd2talk-generate`: the model commands.

Training (stage 1 motion, stage 2 frames) and generation land with their own
issues; until then these commands say so and exit with status 2.
"""

from __future__ import annotations

import sys

_LATER = ("{cmd} is not implemented yet: it lands with the {what} issue. The data pipeline "
          "(`fd2talk-prep`) is ready: it writes the shards that {cmd} will read.")


def train_main() -> None:
    print(_LATER.format(cmd="fd2talk-train", what="motion and frame model"), file=sys.stderr)
    sys.exit(2)


def generate_main() -> None:
    print(_LATER.format(cmd="fd2talk-generate", what="generation"), file=sys.stderr)
    sys.exit(2)
