"""The processes of a run: the Celery app and its tasks (thin glue), the broker, launchers."""
