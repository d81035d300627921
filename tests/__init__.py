"""hoptrace tests: against real Kafka, Redis and worker processes."""
