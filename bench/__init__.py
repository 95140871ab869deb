"""Benchmark of blooio-operator against the local control plane and the Blooio simulator.

``python -m bench.run --sizes 100,1000`` (see bench/README.md). Modules:

- ``run``     the command: one isolated world per size, all phases, the report.
- ``world``   control plane with audit logging, simulator, RBAC/ServiceAccounts, processes.
- ``kube``    a small asyncio Kubernetes REST client (creates, patches, watches).
- ``measure`` burst and paced applies, a watch that records when each resource is Ready.
- ``audit``   the audit policy and exact write counts from the apiserver audit log.
- ``floor``   the floor: only the unavoidable work per resource, as its own process.
- ``report``  JSON, Markdown table and PNG chart.
"""
