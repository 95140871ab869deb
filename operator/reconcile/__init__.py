"""The lifecycle logic of a BlooioWebhook: create, update, replace, delete, drift,
recovery, rotation and adoption. No kopf decorators here."""
