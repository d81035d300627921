"""Queue depth and consumer lag gauges, kept current by background refreshers (``hoptrace monitor``)."""
