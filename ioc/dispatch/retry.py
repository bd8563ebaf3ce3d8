"""The retry policy: which answers are worth another attempt, and how long to wait first."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from ioc.dispatch.delivery import Outcome

# 4xx answers that mean "not now" rather than "never": request timeout, conflict (the receiver is
# still processing the same idempotency key), too early, too many requests.
RETRYABLE_4XX = frozenset({408, 409, 425, 429})
# A Retry-After longer than this is treated as this: a receiver cannot park a dispatch for days.
RETRY_AFTER_CAP_S = 3600.0


def classify_status(status_code: int) -> Outcome:
    """2xx delivered; 5xx and :data:`RETRYABLE_4XX` retry; any other answer (other 4xx, and 3xx:
    redirects are not followed, the configured URL must be the final one) fails for good."""
    if 200 <= status_code < 300:
        return Outcome.DELIVERED
    if status_code >= 500 or status_code in RETRYABLE_4XX:
        return Outcome.RETRY
    return Outcome.FAILED


def backoff_delay(
    attempt: int, *, base_s: float, max_s: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And
    Jitter"): uniform in ``[0, min(max_s, base_s * 2 ** (attempt - 1))]`` after attempt
    ``attempt`` (1 = the first). Computed from the stored attempt count rather than
    :class:`ioc.core.backoff.Backoff`'s in-memory state, so it survives restarts and is the same in
    every worker."""
    ceiling = min(max_s, base_s * 2.0 ** min(max(attempt - 1, 0), 60))
    return (rng or random).uniform(0.0, ceiling)


def retry_delay(
    attempt: int,
    *,
    base_s: float,
    max_s: float,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Delay before the next attempt: the jittered backoff, but never sooner than the receiver's
    Retry-After (capped at :data:`RETRY_AFTER_CAP_S`)."""
    delay = backoff_delay(attempt, base_s=base_s, max_s=max_s, rng=rng)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, RETRY_AFTER_CAP_S))
    return delay


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date, RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
