"""Numbers read from the hub's environment: one parser, one wording of the error.

Every hub setting that is a number (seconds, multiples, counts) is read with :func:`env_number`, so
an unusable value fails at start with a ValueError that names the variable and what it must be,
the same way for every setting.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

__all__ = ["env_number"]


def env_number(var: str, environ: Mapping[str, str] | None = None, *, whole: bool = False,
               above: float | None = None, at_least: float | None = None) -> float | int | None:
    """The number in ``var`` (None when it is unset or blank); ValueError naming ``var`` when it is
    not a finite number (``whole``: an integer), or not ``> above`` / ``>= at_least``."""
    env = os.environ if environ is None else environ
    text = env.get(var, "").strip()
    if not text:
        return None
    kind = "whole number" if whole else "number"
    try:
        value: float | int = int(text) if whole else float(text)
    except ValueError:
        raise ValueError(f"{var}: not a {kind}: {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{var}: not a finite {kind}: {text!r}")
    if above is not None and not value > above:
        raise ValueError(f"{var}: must be a {kind} > {above:g}, not {text}")
    if at_least is not None and not value >= at_least:
        raise ValueError(f"{var}: must be a {kind} >= {at_least:g}, not {text}")
    return value
