"""Consuming side: the Kafka poll-loop worker and the Celery worker integration."""
