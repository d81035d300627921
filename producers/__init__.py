"""Publishing side: Kafka and Celery publishers that inject trace context."""
