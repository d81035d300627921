"""OAUTHBEARER for hoptrace's Kafka clients: the access token comes from a function of the user's, named by an import path."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from kafka.net.sasl.oauth import AbstractTokenProvider


class FunctionTokenProvider(AbstractTokenProvider):
    """kafka-python's token provider around a function returning the current access token (it is called at each authentication)."""

    def __init__(self, fetch: Callable[[], str]) -> None:
        """Ask FETCH for the token each time one is needed (caching and refreshing it are FETCH's business)."""
        super().__init__()
        self._fetch = fetch

    def token(self) -> str:
        """The current access token."""
        return self._fetch()


def token_function(path: str) -> Callable[[], str]:
    """The function PATH (``module:function``) names; ValueError saying what is wrong when there is none."""
    module_name, _, name = path.partition(":")
    if not module_name or not name:
        raise ValueError(f"{path!r} is not module:function")
    try:
        found = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"{path!r} names no function: {error}") from error
    if not callable(found):
        raise ValueError(f"{path!r} is not callable")
    return found  # type: ignore[no-any-return]
