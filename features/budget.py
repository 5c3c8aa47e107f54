"""A time limit for an extraction (`--time-limit 9h`: a Kaggle notebook's limit): after the
first batches, the whole pass's time is estimated from their measured speed, and a pass that
would not fit stops there, before hours are spent, saying which backbones to drop.

The first batch is not counted (it traces and warms the models up). What was extracted
before the stop is kept in the part files, so a rerun with fewer backbones or a larger
limit resumes from it.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field

from base.errors import HarnessError

logger = logging.getLogger(__name__)

MEASURED_BATCHES = 2  # batches timed (after the warm-up one) before the estimate is made
_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(text: str | float) -> float:
    """Seconds of "9h", "90m", "45s", "1.5h" or a plain number of seconds.

    Raises:
        HarnessError: anything else, naming the forms it accepts.
    """
    if isinstance(text, (int, float)) and text > 0:
        return float(text)
    found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", str(text))
    if not found or float(found.group(1)) <= 0:
        raise HarnessError(f"time limit {text!r} is not a duration: give e.g. 9h, 90m, "
                           "45s or a number of seconds")
    return float(found.group(1)) * _UNITS[found.group(2) or "s"]


def format_duration(seconds: float) -> str:
    """`seconds` as "2.3 h", "14 min" or "40 s"."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


@dataclass
class TimeBudget:
    """The limit of one extraction pass and what was measured against it.

    Attributes:
        limit: Seconds the pass may take.
        images: Images the pass has to compute (every split).
        started: When the pass began (before building the models: they count).
    """

    limit: float
    images: int
    started: float = field(default_factory=time.perf_counter)
    done: int = 0
    batches: int = 0
    timed_from: float | None = None  # the end of the warm-up batch
    timed_images: int = 0
    checked: bool = False

    def batch_done(self, count: int, model_seconds: dict[str, float]) -> None:
        """Record one finished batch of `count` images; once MEASURED_BATCHES have been
        timed, estimate the whole pass and stop it when it cannot fit.

        Args:
            model_seconds: Each backbone's model seconds so far (which to drop first).

        Raises:
            HarnessError: the estimate exceeds the limit (the backbones to drop named).
        """
        now = time.perf_counter()
        self.done += count
        self.batches += 1
        if self.batches == 1:
            self.timed_from = now
            return
        self.timed_images += count
        if self.checked or self.batches <= MEASURED_BATCHES:
            return
        self.checked = True
        per_image = (now - self.timed_from) / max(1, self.timed_images)
        elapsed = now - self.started
        estimate = elapsed + per_image * (self.images - self.done)
        if estimate <= self.limit:
            logger.info("time limit %s: the extraction should take about %s",
                        format_duration(self.limit), format_duration(estimate))
            return
        raise HarnessError(self._over(estimate, per_image, elapsed, model_seconds))

    def _over(self, estimate: float, per_image: float, elapsed: float,
              model_seconds: dict[str, float]) -> str:
        """The message of a pass that does not fit: its estimate, and the slowest backbones
        whose removal would make it fit (by their share of the model time)."""
        total = sum(model_seconds.values()) or 1.0
        remaining = estimate - elapsed
        dropped, left = [], remaining
        for name, seconds in sorted(model_seconds.items(), key=lambda kv: -kv[1]):
            if elapsed + left <= self.limit or len(dropped) == len(model_seconds) - 1:
                break
            dropped.append(name)
            left -= remaining * seconds / total
        advice = (f"drop {', '.join(dropped)} (about {format_duration(elapsed + left)})"
                  if dropped and elapsed + left <= self.limit else
                  "extract in shards (--shard) or on a faster machine")
        return (f"time limit {format_duration(self.limit)}: at the speed of the first "
                f"batches ({1 / per_image:.1f} images/s), the {self.images} images would take "
                f"about {format_duration(estimate)}; {advice}, or raise --time-limit; what is "
                "extracted so far is kept and a rerun resumes from it")
