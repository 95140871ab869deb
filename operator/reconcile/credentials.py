"""Which Blooio API key a resource may use, and keeping its credentials Secret alive.

Three rules, checked before a key is used for anything:

* ``spec.credentialsRef`` may name only a Secret that opted in with the label
  ``blooio.com/credentials: "true"`` (``BLOOIO_CREDENTIALS_REQUIRE_LABEL``): someone who
  may create BlooioWebhooks but not read Secrets cannot make the operator use (and send to
  Blooio) bytes of an unrelated Secret of their namespace. Missing Secret, missing key and
  missing label give one and the same message, so the operator is no oracle for which
  Secrets exist either.
* A key must look like an API key (printable ASCII, no whitespace, bounded length)
  before it goes into a header: a PEM block with newlines is refused with a message that
  holds none of its bytes, and nothing is sent.
* The default key (``BLOOIO_API_KEY``) serves only the namespaces matching
  ``BLOOIO_DEFAULT_KEY_NAMESPACES``.

And one about webhooks: a resource whose webhook another resource also records, and which
got it by adoption, does not act on it (no PATCH back and forth on every drift check).

While a resource uses a credentials Secret, the Secret carries the finalizer
``blooio.com/credentials-in-use``, so deleting the whole namespace leaves the key readable
until every finalizer that needs it has run; ``release_if_unused`` removes it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import re
from typing import TYPE_CHECKING, Any

from blooio_operator.kube import KubeClient
from blooio_operator.kube.client import SecretView
from blooio_operator.models import reasons
from blooio_operator.reconcile.errors import CredentialsFailure
from blooio_operator.settings import Settings

if TYPE_CHECKING:
    from blooio_operator.reconcile.context import WebhookContext

log = logging.getLogger("blooio_operator.reconcile")

MIN_KEY_LENGTH = 8
MAX_KEY_LENGTH = 512
_PRINTABLE = re.compile(r"[\x21-\x7e]+")  # printable ASCII without space


def key_id(api_key: str) -> str:
    """A short, non-reversible name for an API key (grouping, never the key)."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]


def key_shape_problem(value: str) -> str | None:
    """What is wrong with ``value`` as an API key, in words that quote none of it."""
    if not MIN_KEY_LENGTH <= len(value) <= MAX_KEY_LENGTH:
        return f"must be {MIN_KEY_LENGTH} to {MAX_KEY_LENGTH} characters long"
    if not _PRINTABLE.fullmatch(value):
        return "must be printable ASCII without whitespace or control characters"
    return None


def default_key_allowed(settings: Settings, namespace: str) -> bool:
    patterns = [p.strip() for p in settings.default_key_namespaces.split(",") if p.strip()]
    return any(fnmatch.fnmatchcase(namespace, p) for p in patterns)


def opted_in(view: SecretView) -> bool:
    return view.labels.get(reasons.LABEL_CREDENTIALS) == "true"


async def resolve_key(ctx: WebhookContext) -> str:
    """The API key this resource may use, or a CredentialsFailure saying why none."""
    ref = ctx.spec.credentials_ref
    if ref is None:
        return _default_key(ctx)
    view = await ctx.kube.read_secret(ctx.namespace, ref.name)
    raw = view.data.get(ref.key) if view is not None else None
    if (
        view is None
        or raw is None
        or (ctx.settings.credentials_require_label and not opted_in(view))
    ):
        label = f", labelled {reasons.LABEL_CREDENTIALS}=true" if _label_required(ctx) else ""
        raise CredentialsFailure(
            reasons.CREDENTIALS_MISSING,
            f"spec.credentialsRef: no usable Secret {ctx.namespace}/{ref.name} with key "
            f"{ref.key!r}{label}. Create it (or label it); the operator retries.",
            delay=ctx.settings.credentials_retry_seconds,
        )
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        value = "\x00"  # not text: fails the shape check below
    if not value:
        raise CredentialsFailure(
            reasons.CREDENTIALS_MISSING,
            f"spec.credentialsRef: key {ref.key!r} of Secret {ctx.namespace}/{ref.name} is "
            "empty. Put the API key there; the operator retries.",
            delay=ctx.settings.credentials_retry_seconds,
        )
    problem = key_shape_problem(value)
    if problem is not None:
        raise CredentialsFailure(
            reasons.CREDENTIALS_INVALID,
            f"spec.credentialsRef: the value of key {ref.key!r} in Secret "
            f"{ctx.namespace}/{ref.name} is not an API key: it {problem}. It was not used.",
            delay=ctx.settings.credentials_retry_seconds,
        )
    if not ctx.deleting and not view.deleting:
        await protect(ctx.kube, ctx.namespace, view)
    return value


def _label_required(ctx: WebhookContext) -> bool:
    return ctx.settings.credentials_require_label


def _default_key(ctx: WebhookContext) -> str:
    secret = ctx.settings.api_key
    value = secret.get_secret_value().strip() if secret else ""
    if not value:
        raise CredentialsFailure(
            reasons.CREDENTIALS_MISSING,
            "No Blooio API key: set spec.credentialsRef or configure the operator's "
            "default key (BLOOIO_API_KEY).",
            delay=ctx.settings.credentials_retry_seconds,
        )
    allowed = default_key_allowed(ctx.settings, ctx.namespace)
    # Deleting a webhook made with this very key stays possible after the allow-list
    # shrank: otherwise the resource could never be deleted without leaving it behind.
    if not allowed and not (ctx.deleting and ctx.status.key_id == key_id(value)):
        raise CredentialsFailure(
            reasons.CREDENTIALS_NOT_ALLOWED,
            f"Namespace {ctx.namespace} may not use the operator's default Blooio API key "
            "(BLOOIO_DEFAULT_KEY_NAMESPACES). Set spec.credentialsRef to a Secret of this "
            f"namespace labelled {reasons.LABEL_CREDENTIALS}=true; nothing was sent to Blooio.",
            delay=ctx.settings.credentials_retry_seconds,
        )
    problem = key_shape_problem(value)
    if problem is not None:
        raise CredentialsFailure(
            reasons.CREDENTIALS_INVALID,
            f"The operator's default API key (BLOOIO_API_KEY) is not an API key: it {problem}.",
            delay=ctx.settings.credentials_retry_seconds,
        )
    return value


def assert_holds_webhook(ctx: WebhookContext) -> None:
    """Refuse to act on a webhook that another resource records too, if we adopted it.

    Adoption of a claimed id is refused (``adopt``), and recovery never matches one; a
    webhook recorded twice is left from before those checks, or from two adoptions at the
    same instant. The one that adopted it yields, so the two never PATCH it back and forth.
    """
    st = ctx.status
    if (
        st.webhook_id
        and st.webhook_id == st.adopted_webhook_id
        and st.webhook_id in ctx.claimed_ids
    ):
        raise CredentialsFailure(
            reasons.WEBHOOK_CLAIMED,
            f"Webhook {st.webhook_id} is also held by another BlooioWebhook; this resource "
            "adopted it and will not act on it. Delete this resource with the annotation "
            f"{reasons.ANNOTATION_SKIP_REMOTE_DELETE}=true, or remove the other resource.",
            delay=ctx.settings.credentials_retry_seconds,
        )


async def protect(kube: KubeClient, namespace: str, view: SecretView) -> None:
    """Put our finalizer on a credentials Secret in use (once; a no-op afterwards)."""
    if reasons.CREDENTIALS_FINALIZER in view.finalizers:
        return
    await kube.add_secret_finalizer(namespace, view.name, reasons.CREDENTIALS_FINALIZER)
    log.info("%s/%s: credentials Secret in use, finalizer added", namespace, view.name)


def credentials_name(body: dict[str, Any]) -> str | None:
    ref = (body.get("spec") or {}).get("credentialsRef") or {}
    name = ref.get("name")
    return name if isinstance(name, str) and name else None


async def release_if_unused(
    kube: KubeClient, namespace: str, secret_name: str, *, except_uid: str | None = None
) -> bool:
    """Remove our finalizer from a credentials Secret no remaining resource refers to.

    ``except_uid``: a resource about to let go (its own finalizer is done). Resources
    being deleted still count: their finalizers may yet need the key. Two finalizers
    running at once may each see the other and keep it; the handler of the DELETED event
    (``handlers.credentials``) then releases it, listing after the object is gone.
    """
    # At most two: enough to know whether anyone but ``except_uid`` is left (a mass
    # deletion must not list the whole namespace once per resource).
    listed = await kube.list_webhook_resources(namespace, credentials_name=secret_name, limit=2)
    users = [
        body
        for body in listed
        if body.get("metadata", {}).get("uid") != except_uid
        and credentials_name(body) == secret_name
    ]
    if users:
        return False
    view = await kube.read_secret(namespace, secret_name)
    if view is None or reasons.CREDENTIALS_FINALIZER not in view.finalizers:
        return False
    await kube.remove_secret_finalizer(namespace, secret_name, reasons.CREDENTIALS_FINALIZER)
    log.info("%s/%s: credentials Secret unused, finalizer removed", namespace, secret_name)
    return True
