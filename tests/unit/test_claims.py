"""Ownership of a webhook is not taken from status alone (issue 19, item 2)."""

from __future__ import annotations

from blooio_operator.handlers.registry import Registry
from blooio_operator.models import reasons
from blooio_operator.reconcile import deletion
from blooio_operator.reconcile.claims import ClaimSeal, derive_key
from blooio_operator.reconcile.errors import PermanentFailure
from tests.unit.fakes import NAMESPACE, World, default_spec, make_body

VICTIM, ATTACKER = "orders", "thief"


async def sealed_world() -> tuple[World, str]:
    world = World()
    world.deps.seal = ClaimSeal(derive_key("operator-only"))
    webhook_id = await world.ready()
    assert world.status()["claim"].startswith("v1:")
    return world, webhook_id


def forge(world: World, webhook_id: str, *, copy_claim: bool = False) -> None:
    """The attacker writes its own resource's status (it may patch blooiowebhooks/status)."""
    status = {"webhookId": webhook_id, "applied": {"url": default_spec()["url"]}}
    if copy_claim:
        status["claim"] = world.status(VICTIM)["claim"]
    world.apply(name=ATTACKER, status=status)


async def test_a_forged_webhook_id_is_never_acted_on() -> None:
    """Found by issue 19: status.webhookId set to another resource's id made the operator
    rotate that webhook's secret into the attacker's Secret, and ping-pong its url."""
    world, webhook_id = await sealed_world()
    for copy_claim in (False, True):  # the victim's seal does not fit another uid
        world.kube.objects.pop((NAMESPACE, ATTACKER), None)
        forge(world, webhook_id, copy_claim=copy_claim)
        world.reset_counters()
        err = await world.run(name=ATTACKER)
        assert isinstance(err, PermanentFailure)
        assert err.reason == reasons.CLAIM_UNVERIFIED
        assert world.blooio.calls == []
        assert world.secret(ATTACKER) is None
        stalled = world.condition("Stalled", name=ATTACKER)
        assert stalled is not None
        assert stalled["reason"] == reasons.CLAIM_UNVERIFIED
    # Deleting the attacker's resource leaves the victim's webhook alone.
    world.kube.objects[(NAMESPACE, ATTACKER)]["metadata"]["deletionTimestamp"] = (
        "2026-01-01T00:00:00Z"
    )
    world.reset_counters()
    assert await world.run(deletion.finalize, name=ATTACKER, action="delete") is None
    assert world.blooio.calls == []
    assert webhook_id in world.blooio.hooks


async def test_adopting_over_a_forged_status_checks_the_claims_and_seals() -> None:
    world, victim_id = await sealed_world()
    forge(world, victim_id)
    world.set_annotation(reasons.ANNOTATION_ADOPT, victim_id, name=ATTACKER)
    world.reset_counters()
    err = await world.run(name=ATTACKER, claimed_ids=[victim_id])  # the victim holds it
    assert isinstance(err, PermanentFailure)
    assert err.reason == reasons.ADOPTION_FAILED
    assert world.blooio.calls == []
    # An id nobody holds is adopted, and the attacker's resource is now sealed for it.
    free = world.blooio.seed(url=default_spec()["url"]).id
    world.set_annotation(reasons.ANNOTATION_ADOPT, free, name=ATTACKER)
    assert await world.run(name=ATTACKER) is None
    status = world.status(ATTACKER)
    assert status["webhookId"] == free
    assert world.deps.seal.verify(world.body(ATTACKER)["metadata"]["uid"], status)


def test_the_registry_holds_only_sealed_claims_and_reservations_are_exclusive() -> None:
    seal = ClaimSeal(derive_key("operator-only"))
    registry = Registry()
    registry.verify = seal.verify
    victim = make_body(name="a", namespace="ns", uid="ua")
    victim["status"] = {"webhookId": "wh_1"}
    victim["status"]["claim"] = seal.seal("ua", victim["status"])
    forged = make_body(name="b", namespace="ns", uid="ub")
    forged["status"] = {"webhookId": "wh_2"}  # nobody sealed this
    registry.observe(victim)
    registry.observe(forged)
    assert registry.holders("wh_1") == frozenset({"ua"})
    assert registry.holders("wh_2") == frozenset()
    # Two recoveries (or adoptions) of the same webhook at the same moment: one wins.
    assert registry.reserve("ux", "wh_3")
    assert not registry.reserve("uy", "wh_3")
    assert "wh_3" in registry.claimed_by_others("uy")
    assert not registry.reserve("uy", "wh_1")


def test_a_rotated_claim_key_still_verifies_with_the_previous_one() -> None:
    status = {"webhookId": "wh_1"}
    old = ClaimSeal(derive_key("old"))
    status["claim"] = old.seal("u1", status)  # type: ignore[assignment]
    rotated = ClaimSeal(derive_key("new"), derive_key("old"))
    assert rotated.verify("u1", status)
    assert not rotated.current("u1", status)  # resealed at start and on the next write
    assert not ClaimSeal(derive_key("new")).verify("u1", status)


async def test_an_adopt_annotation_that_is_not_a_webhook_id_sends_nothing() -> None:
    """An adopt value of 64 KB made httpx raise InvalidURL, retried forever as transient."""
    world = World()
    await world.ready()
    world.set_annotation(reasons.ANNOTATION_ADOPT, "wh_" + "x" * 70_000)
    world.reset_counters()
    err = await world.run()
    assert isinstance(err, PermanentFailure)
    assert err.reason == reasons.ADOPTION_FAILED
    assert world.blooio.calls == []
