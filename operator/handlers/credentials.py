"""kopf registrations that let go of credentials Secrets (``blooio.com/credentials-in-use``).

The finalizer of a BlooioWebhook releases its credentials Secret when no other resource
refers to it (``reconcile.deletion``). Two more moments are covered here:

* the resource is gone (the watch's DELETED event): two finalizers that ran at the same
  time may each have seen the other and kept the Secret; listing after the object is
  gone settles it;
* ``spec.credentialsRef`` changed: the Secret named before may now be unused.

Neither writes to the BlooioWebhook, so they cost nothing on the usual path.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from blooio_operator.models.resource import GROUP, PLURAL, VERSION
from blooio_operator.reconcile import credentials
from blooio_operator.reconcile.context import Deps

log = logging.getLogger("blooio_operator.handlers")
RESOURCE = (GROUP, VERSION, PLURAL)


def _deleted_with_credentials(type: str | None, body: kopf.Body, **_: Any) -> bool:
    return type == "DELETED" and credentials.credentials_name(dict(body)) is not None


def register(registry: kopf.OperatorRegistry) -> None:
    @kopf.on.event(
        *RESOURCE, registry=registry, id="credentials_gone", when=_deleted_with_credentials
    )
    async def resource_gone(body: kopf.Body, namespace: str | None, memo: Any, **_: Any) -> None:
        name = credentials.credentials_name(dict(body))
        if name is not None and namespace:
            await _release(memo, namespace, name)

    @kopf.on.update(*RESOURCE, registry=registry, id="credentials_ref", field="spec.credentialsRef")
    async def ref_changed(old: Any, namespace: str | None, memo: Any, **_: Any) -> None:
        name = old.get("name") if isinstance(old, dict) else None
        if name and namespace:
            await _release(memo, namespace, name)


async def _release(memo: kopf.Memo, namespace: str, name: str) -> None:
    deps: Deps | None = memo.get("deps")
    if deps is None:
        return
    try:
        await credentials.release_if_unused(deps.kube, namespace, name)
    except Exception as exc:  # logged, not retried: the next deletion looks again
        log.warning("%s/%s: could not release the credentials Secret: %s", namespace, name, exc)
