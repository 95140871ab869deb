"""Every condition type, condition reason and Event reason the operator uses.

One list, so troubleshooting docs, tests and code agree on the vocabulary.
"""

from __future__ import annotations

from typing import Final

# Condition types (kstatus-compatible: Ready, Reconciling, Stalled).
READY: Final = "Ready"
RECONCILING: Final = "Reconciling"
STALLED: Final = "Stalled"
# Informational: never changes Ready, Reconciling or Stalled (nor kstatus, nor Argo CD).
DELIVERIES_HEALTHY: Final = "DeliveriesHealthy"

# Condition reasons.
SYNCED: Final = "Synced"
SUSPENDED_REASON: Final = "Suspended"
CREATING: Final = "Creating"
UPDATING: Final = "Updating"
REMOTE_ERROR: Final = "RemoteError"
RATE_LIMITED: Final = "RateLimited"
OUTCOME_UNKNOWN: Final = "OutcomeUnknown"
# An interrupted request (a crash, a lost answer) could still take effect at Blooio: the
# operator waits until it cannot before looking again (no Event: nothing failed anew).
SETTLING: Final = "WaitingForBlooio"
# DeliveriesHealthy reasons.
RECEIVER_ACCEPTING: Final = "ReceiverAccepting"
RECEIVER_REJECTING: Final = "ReceiverRejecting"
RECEIVER_FAILING: Final = "ReceiverFailing"
RECEIVER_UNREACHABLE: Final = "ReceiverUnreachable"
NO_RECENT_DELIVERIES: Final = "NoRecentDeliveries"
DELIVERIES_PENDING: Final = "DeliveriesPending"
NEWEST_DELIVERY_UNKNOWN: Final = "NewestDeliveryUnknown"

# Reasons used both as condition reasons and as Event reasons.
VALIDATION_FAILED: Final = "ValidationFailed"
BAD_REQUEST: Final = "BadRequest"
CREDENTIALS_MISSING: Final = "CredentialsMissing"
CREDENTIALS_INVALID: Final = "CredentialsInvalid"
CREDENTIALS_CHANGED: Final = "CredentialsChanged"
SECRET_CONFLICT: Final = "SecretConflict"
AMBIGUOUS_RECOVERY: Final = "AmbiguousRecovery"
ADOPTION_FAILED: Final = "AdoptionFailed"
CREDENTIALS_NOT_ALLOWED: Final = "CredentialsNotAllowed"
WEBHOOK_CLAIMED: Final = "WebhookClaimed"
WRITE_REJECTED: Final = "WriteRejected"
# status names a webhook (or an intent) the operator did not seal for this resource.
CLAIM_UNVERIFIED: Final = "ClaimUnverified"

# Event reasons.
CREATED: Final = "Created"
UPDATED: Final = "Updated"
REPLACED: Final = "Replaced"
SUSPENDED: Final = "Suspended"
RESUMED: Final = "Resumed"
DELETED: Final = "Deleted"
ORPHANED: Final = "Orphaned"
DISABLED: Final = "Disabled"
DRIFT_CORRECTED: Final = "DriftCorrected"
RECREATED: Final = "Recreated"
SECRET_RESTORED: Final = "SecretRestored"
SECRET_ROTATED: Final = "SecretRotated"
ADOPTED: Final = "Adopted"
RECOVERED: Final = "Recovered"
DELIVERIES_REPLAYED: Final = "DeliveriesReplayed"
DELIVERIES_NOT_REPLAYED: Final = "DeliveriesNotReplayed"
REPLAY_REQUEST_INVALID: Final = "ReplayRequestInvalid"
# A failure episode ended (Normal): the resource is Ready again after RemoteError,
# RateLimited, CredentialsInvalid, ... (unless the success posted an Event of its own).
FAILURE_CLEARED: Final = "FailureCleared"

EVENT_REASONS: Final = frozenset(
    {
        CREATED,
        UPDATED,
        REPLACED,
        SUSPENDED,
        RESUMED,
        DELETED,
        ORPHANED,
        DISABLED,
        DRIFT_CORRECTED,
        RECREATED,
        SECRET_RESTORED,
        SECRET_ROTATED,
        ADOPTED,
        RECOVERED,
        DELIVERIES_REPLAYED,
        DELIVERIES_NOT_REPLAYED,
        REPLAY_REQUEST_INVALID,
        FAILURE_CLEARED,
        VALIDATION_FAILED,
        BAD_REQUEST,
        CREDENTIALS_MISSING,
        CREDENTIALS_INVALID,
        CREDENTIALS_CHANGED,
        SECRET_CONFLICT,
        AMBIGUOUS_RECOVERY,
        ADOPTION_FAILED,
        CREDENTIALS_NOT_ALLOWED,
        WEBHOOK_CLAIMED,
        WRITE_REJECTED,
        CLAIM_UNVERIFIED,
        REMOTE_ERROR,
        RATE_LIMITED,
    }
)

# Annotations users set on a BlooioWebhook.
ANNOTATION_ROTATE: Final = "blooio.com/rotate-secret"
ANNOTATION_ADOPT: Final = "blooio.com/adopt-webhook-id"
ANNOTATION_SKIP_REMOTE_DELETE: Final = "blooio.com/skip-remote-delete"
ANNOTATION_REPLAY_SINCE: Final = "blooio.com/replay-failed-since"

# Labels the operator puts on the Secrets it writes.
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "blooio-operator"
LABEL_WEBHOOK: Final = "blooio.com/webhook"

# A Secret opts in to being used as credentials (spec.credentialsRef) with this label
# set to "true"; while a BlooioWebhook uses it, it carries the finalizer below.
LABEL_CREDENTIALS: Final = "blooio.com/credentials"
CREDENTIALS_FINALIZER: Final = "blooio.com/credentials-in-use"
