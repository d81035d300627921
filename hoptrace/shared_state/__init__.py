"""State the pipeline's processes share on Redis, the broker the pipeline already has.

- ``job_ledger``: every job's start and final outcome, so ``hoptrace monitor`` finds a job that never finished;
- ``keep_channel``: the flight recorders' keeps, announced to every process of the pipeline over pub/sub.

It imports the ground floor (whose middleware and flight recorder it feeds, through their own protocols); the
command line's runtime, the gauges and the drop-in instrumentation import it.
"""
