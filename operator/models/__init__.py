"""The BlooioWebhook resource as pydantic models, and condition/Event vocabulary."""
