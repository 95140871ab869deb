"""blooio-operator: Blooio webhook subscriptions as Kubernetes BlooioWebhook resources."""

__version__ = "0.2.0"
