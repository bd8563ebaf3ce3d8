"""Webhook signatures: HMAC-SHA256 over ``{timestamp}.{body}`` with the agency's secret.

The scheme is Stripe's and GitHub's: the receiver recomputes the MAC over the raw body bytes and
the ``X-IOC-Timestamp`` header, compares in constant time, and refuses timestamps too far from
its clock so a captured request cannot be replayed later. docs/dispatch.md has the recipe.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-IOC-Signature"
TIMESTAMP_HEADER = "X-IOC-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SCHEME = "sha256="
DEFAULT_TOLERANCE_S = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-IOC-Signature`` value: ``sha256=<hex>``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return SCHEME + mac.hexdigest()


def verify(
    secret: str,
    *,
    timestamp: str,
    signature: str,
    body: bytes,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """True when ``signature`` is ours for ``body`` and ``timestamp`` is within ``tolerance_s`` of
    ``now`` (Unix seconds). What an agency's receiver does, in Python."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)
