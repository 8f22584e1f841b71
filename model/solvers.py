"""The samplers `Diffusion.sample` offers both stages (paper section 3, eq. 5; DESIGN.md section
1), by name. A string enum in a module without torch: its values are the words of `--solver`,
so the command lines list them without loading torch, and they compare, print and serialise
as those words.
"""

from __future__ import annotations

from enum import StrEnum


class Solver(StrEnum):
    """The sampler of both stages."""

    ddim = "ddim"  # the paper's eq. 5 (DDIM with sigma_t; eta > 0 adds ancestral noise)
    dpm = "dpm++"  # DPM-Solver++ (2nd order, multistep): close to 50 DDIM steps in 10-20
