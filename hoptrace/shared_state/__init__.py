"""State the pipeline's processes share on Redis, the broker the pipeline already has.

- ``job_ledger``: every job's start and final outcome, so ``hoptrace monitor`` finds a job that never finished;
- ``keep_channel``: the flight recorders' keeps, announced to every process of the pipeline over pub/sub.

It imports the ground floor (whose middleware and flight recorder it feeds, through their own protocols); the
command line's runtime, the gauges and the drop-in instrumentation import it.
"""

if __name__ != "hoptrace.shared_state":  # one name per module, as in the repository's mapped folders
    raise ImportError(f"import this as hoptrace.shared_state, not {__name__}: hoptrace installs one top-level name, hoptrace")
