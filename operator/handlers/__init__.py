"""kopf handler registrations (thin)."""
