"""blooio-operator: Blooio webhook subscriptions as Kubernetes BlooioWebhook resources."""

__version__ = "0.1.0"
