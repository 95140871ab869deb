"""Issue 19: status and annotations are input; fuzzed against the real API server.

Property-based (hypothesis): for a Ready resource, write generated values through the
status subresource, or into the annotations the operator reads. The status values come
from the installed CRD's own schema (so they are what the API server accepts: types,
enums, lengths, counts): RFC 3339 in every spelling its ``date-time`` check lets through
(and what else it lets through), junk where it takes any string, foreign fields under the
preserve-unknown ``status.kopf``. Then:

- a spec edit is applied: Ready for the new generation, the webhook in status has the
  new url at the simulator (which saw the PATCH, or for a channel recorded otherwise a
  replace that deleted the old webhook), and the Secret holds its current signing secret;
  or, the one human-needed outcome, ``Stalled`` for the new generation with the reason
  that names the cause (a claim the operator did not seal; an adoption of nothing);
- there is no hot loop: over a few seconds, at most a couple of status writes, no
  Warning Event, a bounded number of Blooio calls; a rotate token rotates once;
- deletion completes (the finalizer is removed);
- no traceback in the operator's log, and each value it cannot use is reported once.

One operator process serves every example (a fresh resource per example). ``make test``
runs a fixed, derandomized budget; ``BLOOIO_FUZZ_EXAMPLES`` and ``BLOOIO_FUZZ_SEED`` run
longer or other examples, ``BLOOIO_FUZZ_SHRINK=1`` shrinks a failure (slow: an example
takes seconds).

Not fuzzed: ``status.webhookId``, ``status.keyId`` and ``status.claim``, claims of
identity rather than values to parse (issue 19, item 2, has its own tests); the other
sealed fields (intents, the adopted id) in a quarter of the examples only; kopf's
progress records (see ``HANDLER_IDS``).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, reject, seed, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from kubernetes import client as k8s
from kubernetes import watch

from blooio_operator.models import reasons
from blooio_operator.reconcile.claims import SEALED_FIELDS
from tests.helpers import wait_for
from tests.integration.conftest import OperatorFactory, OperatorProcess, Simulator
from tests.integration.webhooks import GROUP, PLURAL, VERSION, Webhooks
from tests.unit.test_status_parsing import crd_date_times, rfc3339_times

pytestmark = pytest.mark.integration
set_hypothesis_home_dir(Path(__file__).resolve().parents[2] / ".build" / "hypothesis")

EXAMPLES = int(os.environ.get("BLOOIO_FUZZ_EXAMPLES") or 15)
SEED = os.environ.get("BLOOIO_FUZZ_SEED")
PHASES = [Phase.explicit, Phase.generate]
if os.environ.get("BLOOIO_FUZZ_SHRINK") == "1":
    PHASES.append(Phase.shrink)

QUIET_SECONDS = 2.0  # the window in which a hot loop would show
MAX_WRITES = 2  # status writes in that window (a delivery check may land in it)
MAX_CALLS = 4  # Blooio calls about the webhook in that window
EVENT_TYPES = ["message.received", "poll.*"]
# kopf keeps each handler's progress in status.kopf.<handler id>; handlers/webhooks.py reads
# them through handlers.diffbase.StatusProgress, tested on its own in
# test_diffbase_invalid.py; the fuzz leaves these keys alone.
HANDLER_IDS = {"reconcile", "finalize", "registry", "deliveries"}


def fuzz(test: Callable[..., None]) -> Callable[..., None]:
    """The budget: fixed and derandomized unless ``BLOOIO_FUZZ_SEED`` is set."""
    configured = settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=SEED is None,
        phases=PHASES,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )(test)
    return seed(int(SEED))(configured) if SEED is not None else configured


# --- generators ------------------------------------------------------------------------------

times = st.one_of(
    rfc3339_times().map(lambda t: t[0]),
    crd_date_times(),
    st.sampled_from(
        [
            "2026-01-01T00:00:00.5Z",
            "2026-01-01T02:00:00+02:00",
            "2026-01-01t00:00:00.123456789z",
            "9999-12-31T23:59:59-14:00",
            "0000-01-01T00:00:00Z",
            "2099-01-01T00:00:00Z",
            "2026-01-01T00:00:00x5Z",
            "2026-01-01T00:00:00ZTnot-a-time",
        ]
    ),
)
small_ints = st.integers(0, 10**6)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def junk(max_bytes: int = 64) -> st.SearchStrategy[str]:
    """Any string the CRD takes where it takes any string (up to its ``maxLength``):
    control characters, unicode, empty, the longest allowed."""

    def fit(text: str) -> str:
        return text.encode()[:max_bytes].decode(errors="ignore")

    return (
        st.text(max_size=min(max_bytes, 40)).map(fit)
        | st.sampled_from(["", "\n", "wh_\nINFO forged"]).map(fit)
        | st.just("x" * max_bytes)
    )


# --- the status, generated from the CRD's own schema ------------------------------------------

CRD = Path(__file__).resolve().parents[2] / "deploy" / "crds" / "blooio.com_blooiowebhooks.yaml"
STATUS_SCHEMA: dict[str, Any] = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"][
    "openAPIV3Schema"
]["properties"]["status"]
# Not fuzzed: claims of identity, not values to parse (see the module docstring).
EXCLUDED = {"status.webhookId", "status.keyId", "status.claim"}
# The other sealed fields (intents, the adopted id) are claims too: one the operator did
# not seal leaves the resource Stalled with ClaimUnverified (reconcile/claims.py). They are
# written in a quarter of the examples, so that most of them show the spec edit applied.
SEALED = {f"status.{field}" for field in SEALED_FIELDS} - EXCLUDED
# Drawn before the resource exists (a discarded draw leaves nothing behind): its webhook
# id is filled in afterwards.
OWN_ID = "<own webhook id>"


def from_schema(
    schema: dict[str, Any], path: str, overrides: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[Any]:
    """Values the API server accepts for ``schema`` (types, enums, lengths, counts)."""
    if path in overrides:
        return overrides[path]
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        limit = int(schema.get("maxLength", 256))
        if schema.get("format") == "date-time":
            return times.filter(lambda v: len(v.encode()) <= limit)
        return junk(limit)
    if kind == "integer":
        return st.integers(int(schema.get("minimum", -(2**63))), 2**63 - 1)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        items = from_schema(schema["items"], path + "[]", overrides)
        return st.lists(items, max_size=min(int(schema.get("maxItems", 5)), 5))
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    fields = {
        key: from_schema(sub, f"{path}.{key}", overrides)
        for key, sub in properties.items()
        if f"{path}.{key}" not in EXCLUDED
    }
    return st.fixed_dictionaries(
        {k: v for k, v in fields.items() if k in required},
        optional={k: v for k, v in fields.items() if k not in required},
    )


def conditions() -> st.SearchStrategy[list[dict[str, Any]]]:
    one = st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                [reasons.READY, reasons.RECONCILING, reasons.STALLED, "example.com/Other"]
            ),
            "status": st.sampled_from(["True", "False", "Unknown"]),
            "reason": st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,20}", fullmatch=True),
            "message": junk(200),
            "lastTransitionTime": times.filter(lambda v: len(v.encode()) <= 64),
        },
        optional={"observedGeneration": small_ints},
    )
    return st.lists(one, max_size=4, unique_by=lambda c: c["type"])


@st.composite
def status_patches(draw: st.DrawFn, url: str) -> dict[str, Any]:
    """A status as a restore (of this or another resource), an edit or a tenant writes it."""
    patch: dict[str, Any] = draw(_status_fields(url, sealed=False))
    if draw(st.integers(0, 3)) == 0:
        patch.update(draw(_status_fields(url, sealed=True)))
    return patch


def _status_fields(url: str, *, sealed: bool) -> st.SearchStrategy[dict[str, Any]]:
    own_url = st.just(url) | junk(2048)
    own_types = st.just(EVENT_TYPES) | st.lists(junk(128), max_size=2)
    own_id = st.just(OWN_ID) | junk(128)
    overrides: dict[str, st.SearchStrategy[Any]] = {
        "status.pending.url": own_url,
        "status.abandoned[].url": own_url,
        "status.pending.eventTypes": own_types,
        "status.abandoned[].eventTypes": own_types,
        "status.rotating.webhookId": own_id,
        "status.deliveries.webhookId": own_id,
        "status.conditions": conditions(),
        "status.kopf": st.dictionaries(
            st.sampled_from(["dummy", "last-handled-configuration"])
            | st.text(min_size=1, max_size=10).filter(lambda k: k not in HANDLER_IDS),
            json_values,
            min_size=1,
            max_size=3,
        ),
    }
    schema = {
        **STATUS_SCHEMA,
        "properties": {
            key: sub
            for key, sub in STATUS_SCHEMA["properties"].items()
            if (f"status.{key}" in SEALED) == sealed
        },
    }
    return from_schema(schema, "status", overrides).filter(bool)


def annotation_sets() -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries(
        {},
        optional={
            reasons.ANNOTATION_ROTATE: junk(300).filter(bool),
            reasons.ANNOTATION_ADOPT: st.sampled_from([OWN_ID, "wh_doesnotexist0000"]) | junk(300),
            reasons.ANNOTATION_REPLAY_SINCE: times | junk(300),
            reasons.ANNOTATION_SKIP_REMOTE_DELETE: st.sampled_from(["true", "false", "True"])
            | junk(300),
        },
    ).filter(bool)


# --- one example -----------------------------------------------------------------------------


class Fuzzing:
    """The world shared by the examples: one namespace, simulator and operator."""

    def __init__(
        self, hooks: Webhooks, simulator: Simulator, op: OperatorProcess, api: k8s.ApiClient
    ) -> None:
        self.hooks = hooks
        self.simulator = simulator
        self.op = op
        self.custom = k8s.CustomObjectsApi(api)
        self.examples = 0
        self.rejected = 0
        self.log_seen = 0

    def next_name(self) -> str:
        self.examples += 1
        return f"fuzz-{self.examples}"

    def ready_resource(self, name: str) -> str:
        """Create ``name``, wait until it is Ready; its webhook id."""
        self.hooks.create(
            name, {"url": f"https://{name}.example.com/hook", "eventTypes": EVENT_TYPES}
        )
        status = self.hooks.wait_ready(name, timeout=30)
        return str(status["webhookId"])

    def write_status(self, name: str, patch: dict[str, Any]) -> None:
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, self.hooks.ns, PLURAL, name, {"status": patch}
            )
        except k8s.ApiException as exc:
            if exc.status != 422:
                raise
            self.rejected += 1  # the CRD refused it: not a value the property is about
            if os.environ.get("BLOOIO_FUZZ_DEBUG"):
                print("REJECTED", exc.body)
            self.delete(name)
            reject()

    def edit_spec(self, name: str) -> str:
        url = f"https://{name}-edited.example.com/hook"
        self.hooks.patch(name, {"spec": {"url": url}})
        return url

    def wait_handled(self, name: str, timeout: float = 45) -> dict[str, Any]:
        """Ready for the current generation, or Stalled for it; the status."""

        def probe() -> dict[str, Any] | None:
            obj = self.hooks.get(name) or {}
            status = obj.get("status") or {}
            if status.get("observedGeneration") != obj["metadata"]["generation"]:
                stalled = self.hooks.condition(name, reasons.STALLED) or {}
                if not (
                    stalled.get("status") == "True"
                    and stalled.get("observedGeneration") == obj["metadata"]["generation"]
                ):
                    return None
            ready = self.hooks.condition(name, reasons.READY) or {}
            stalled = self.hooks.condition(name, reasons.STALLED) or {}
            if ready.get("status") == "True" or stalled.get("status") == "True":
                return status
            return None

        return wait_for(probe, timeout=timeout, message=f"{name} handled at its generation")

    def assert_applied(self, name: str, url: str, *, patched: bool, since: float) -> None:
        status = self.hooks.wait_ready(name, timeout=45)
        webhook_id = status["webhookId"]
        remote = self.simulator.webhook(webhook_id)
        assert remote is not None, f"{webhook_id} is not at Blooio"
        assert remote["url"] == url
        secret = self.hooks.secret_data(status["secretName"])
        assert secret.get("signing-secret") == remote["signing_secret"]
        assert secret.get("webhook-id") == webhook_id
        if patched:
            patches = [
                c
                for c in self.simulator.calls("PATCH /webhooks/{id}")
                if c["path"].endswith(f"/{webhook_id}") and c["ts"] >= since
            ]
            assert patches, f"no PATCH of {webhook_id} after the edit"

    def assert_quiet(self, name: str, webhook_id: str) -> None:
        """No hot loop: few status writes, no Warning Event, few Blooio calls."""
        # kopf posts Events in batches, after the status write that showed the outcome:
        # the window starts once the Warnings of what just happened are in.
        warnings = self._settled_warnings(name)
        obj = self.hooks.get(name)
        assert obj is not None
        calls = self._calls(webhook_id)
        writes = 0
        stream = watch.Watch().stream(
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.hooks.ns,
            PLURAL,
            field_selector=f"metadata.name={name}",
            resource_version=obj["metadata"]["resourceVersion"],
            timeout_seconds=int(QUIET_SECONDS),
        )
        for event in stream:
            if event["type"] == "MODIFIED":
                writes += 1
        assert writes <= MAX_WRITES, f"{writes} writes of {name} in {QUIET_SECONDS} s"
        assert self._warnings(name) == warnings, f"Warning Events for {name} while settled"
        assert self._calls(webhook_id) - calls <= MAX_CALLS, f"Blooio calls for {webhook_id}"

    def delete(self, name: str) -> None:
        self.hooks.delete(name)
        wait_for(lambda: self.hooks.get(name) is None, timeout=45, message=f"{name} deleted")

    def assert_log_clean(self) -> None:
        """No traceback, and every unusable value reported once (not once per event)."""
        text = self.op.logs()
        new, self.log_seen = text[self.log_seen :], len(text)
        assert "Traceback" not in new, new[new.index("Traceback") - 2000 :][:6000]
        ignored = Counter(
            line.split(": ", 1)[-1]
            for line in text.splitlines()
            if " is ignored (" in line or "is unreadable (" in line
        )
        repeated = [line for line, n in ignored.items() if n > 1]
        assert not repeated, repeated

    def rotations(self, webhook_id: str) -> int:
        return sum(
            1
            for c in self.simulator.calls("POST /webhooks/{id}/secret/rotate")
            if f"/{webhook_id}/" in c["path"]
        )

    def _settled_warnings(self, name: str, settle: float = 1.0, timeout: float = 10.0) -> int:
        count, since = self._warnings(name), time.monotonic()
        deadline = since + timeout
        while time.monotonic() - since < settle and time.monotonic() < deadline:
            time.sleep(0.2)
            if (now := self._warnings(name)) != count:
                count, since = now, time.monotonic()
        return count

    def _warnings(self, name: str) -> int:
        return sum(e.count or 1 for e in self.hooks.events(name) if e.type == "Warning")

    def _calls(self, webhook_id: str) -> int:
        return sum(1 for c in self.simulator.calls() if webhook_id in (c.get("path") or ""))


def own(value: Any, webhook_id: str) -> Any:
    """``value`` with ``OWN_ID`` replaced by the resource's webhook id."""
    if isinstance(value, dict):
        return {k: own(v, webhook_id) for k, v in value.items()}
    if isinstance(value, list):
        return [own(v, webhook_id) for v in value]
    return webhook_id if value == OWN_ID else value


@pytest.fixture
def fuzzing(
    kube_api: k8s.ApiClient,
    namespace: str,
    simulator: Simulator,
    start_operator: OperatorFactory,
) -> Fuzzing:
    return Fuzzing(Webhooks(kube_api, namespace), simulator, start_operator(), kube_api)


# An example takes about 3 s (up to a minute when it fails): longer runs need more time
# than pytest-timeout's default for a test.
long_enough = pytest.mark.timeout(max(300, 30 * EXAMPLES))


@long_enough
def test_status_values_never_wedge_a_resource(fuzzing: Fuzzing) -> None:
    @fuzz
    @given(st.data())
    def example(data: st.DataObject) -> None:
        name = fuzzing.next_name()
        drawn = data.draw(status_patches(f"https://{name}.example.com/hook"), label="status")
        webhook_id = fuzzing.ready_resource(name)
        patch = own(drawn, webhook_id)
        fuzzing.write_status(name, patch)
        since = time.time()
        new_url = fuzzing.edit_spec(name)
        fuzzing.wait_handled(name)
        stalled = fuzzing.hooks.condition(name, reasons.STALLED) or {}
        if stalled.get("status") == "True":
            # The one human-needed outcome: a claim the operator did not seal.
            assert SEALED & {f"status.{k}" for k in patch}, stalled
            assert stalled["reason"] == reasons.CLAIM_UNVERIFIED, stalled
        else:
            # A channel recorded in status.applied other than the spec's makes a replace
            # (a new webhook, the old one deleted) rather than a PATCH.
            replaced = {"channelId", "channelType"} & set(patch.get("applied") or {})
            fuzzing.assert_applied(name, new_url, patched=not replaced, since=since)
            now_id = fuzzing.hooks.status(name)["webhookId"]
            if now_id != webhook_id:
                assert fuzzing.simulator.webhook(webhook_id) is None, "the old webhook is left"
        fuzzing.assert_quiet(name, fuzzing.hooks.status(name).get("webhookId") or webhook_id)
        fuzzing.delete(name)
        fuzzing.assert_log_clean()

    example()
    assert fuzzing.rejected <= EXAMPLES // 5, f"the CRD refused {fuzzing.rejected} patches"


@long_enough
def test_annotations_never_wedge_a_resource(fuzzing: Fuzzing) -> None:
    @fuzz
    @given(st.data())
    def example(data: st.DataObject) -> None:
        name = fuzzing.next_name()
        drawn = data.draw(annotation_sets(), label="annotations")
        webhook_id = fuzzing.ready_resource(name)
        annotations = own(drawn, webhook_id)
        fuzzing.hooks.patch(name, {"metadata": {"annotations": annotations}})
        since = time.time()
        new_url = fuzzing.edit_spec(name)
        status = fuzzing.wait_handled(name)
        stalled = fuzzing.hooks.condition(name, reasons.STALLED) or {}
        adopt = annotations.get(reasons.ANNOTATION_ADOPT)
        if stalled.get("status") == "True":
            # The one human-needed outcome: adopting a webhook that is not there.
            assert adopt, stalled
            assert stalled["reason"] == reasons.ADOPTION_FAILED, stalled
            assert "\n" not in stalled["message"]
            fuzzing.assert_quiet(name, status["webhookId"])
            fuzzing.hooks.patch(
                name, {"metadata": {"annotations": {reasons.ANNOTATION_ADOPT: None}}}
            )
        fuzzing.assert_applied(name, new_url, patched=True, since=since)
        if annotations.get(reasons.ANNOTATION_ROTATE):
            # Rotated once for the token (how the token is recorded is the operator's
            # business: a long one is kept as a digest).
            rotations = wait_for(
                lambda: fuzzing.rotations(webhook_id),
                timeout=30,
                message=f"{webhook_id} rotated for the token",
            )
            assert rotations == 1, f"{rotations} rotations for one token"
        fuzzing.assert_quiet(name, fuzzing.hooks.status(name)["webhookId"])
        if annotations.get(reasons.ANNOTATION_ROTATE):
            assert fuzzing.rotations(webhook_id) == 1, "rotated again for the same token"
        fuzzing.delete(name)
        fuzzing.assert_log_clean()

    example()


def test_log_lines_are_not_forged_by_the_fuzzed_values(fuzzing: Fuzzing) -> None:
    """The junk above includes ``wh_\\nINFO forged``: every log line is one record."""
    name = fuzzing.next_name()
    fuzzing.ready_resource(name)
    forged = "wh_x\n2026-01-01 00:00:00,000 INFO    blooio_operator: forged"
    fuzzing.hooks.patch(name, {"metadata": {"annotations": {reasons.ANNOTATION_ADOPT: forged}}})
    stalled = fuzzing.hooks.wait_condition(name, reasons.STALLED, reason=reasons.ADOPTION_FAILED)
    assert "wh_x\\n2026" in stalled["message"]
    wait_for(
        lambda: any(
            e.reason == reasons.ADOPTION_FAILED and "wh_x\\n2026" in (e.message or "")
            for e in fuzzing.hooks.events(name)
        ),
        timeout=15,
        message="the escaped Warning Event",
    )
    fuzzing.delete(name)
    lines = fuzzing.op.logs().splitlines()
    assert not any(line.startswith("2026-01-01 00:00:00,000 INFO") for line in lines)
    assert any("wh_x\\n2026-01-01" in line for line in lines)
