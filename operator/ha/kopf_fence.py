"""kopf's own writes behind the leadership fence.

kopf patches the resources itself (finalizers, its progress and diff base in status, the
handler's final status patch) and posts the Events of its poster, all through one
function, ``kopf._cogs.clients.api.request`` (kopf 1.45; ``get``/``patch``/``post``/
``delete`` and the watch streams call it by its module-global name). kopf offers no hook
for its HTTP session short of replacing the login handler, so that one function is
wrapped: a write (any method but GET/HEAD) checks the fence of the running operator
(``ha.fence.current()``) first. Reads and watches are left alone.

``install()`` is idempotent and checked by a unit test against the pinned kopf, so an
upgrade that moves the function fails a test instead of silently unfencing kopf.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from kopf._cogs.clients import api as kopf_api

from blooio_operator.ha import fence as fencing

__all__ = ["install", "installed"]

_READS = frozenset({"GET", "HEAD"})
_MARK = "__blooio_fenced__"


def installed() -> bool:
    return bool(getattr(kopf_api.request, _MARK, False))


def install() -> None:
    """Wrap kopf's request function once (no effect on a process without a fence)."""
    if installed():
        return
    original: Callable[..., Awaitable[Any]] = kopf_api.request

    @functools.wraps(original)
    async def fenced_request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if method.upper() not in _READS:
            fence = fencing.current()
            if fence is not None:
                fence.check(f"kopf {method.upper()} {url}")
        return await original(method, url, *args, **kwargs)

    setattr(fenced_request, _MARK, True)
    kopf_api.request = fenced_request
