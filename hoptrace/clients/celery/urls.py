"""Broker URLs as hoptrace shows them: the password masked (kombu's own rule)."""

from __future__ import annotations

from kombu.utils.url import maybe_sanitize_url


def shown_url(url: str) -> str:
    """URL with its password masked, to print or log."""
    return str(maybe_sanitize_url(url))
