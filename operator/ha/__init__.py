"""High availability: leader election on a Lease, and the fence that ends a term.

``fence`` (a leaf the clients import) holds the term; ``elector`` acquires and renews the
Lease through ``kube``; ``kopf_fence`` puts kopf's own writes behind the same fence;
``process`` runs the operator process as a standby until it leads (health and metrics
for both roles), then kopf, and ends it the moment the term does.
"""
