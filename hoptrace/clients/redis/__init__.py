"""hoptrace's own state on Redis, shared by a pipeline's processes, and the command line's Redis requests.

With Celery's folder (whose broker is Redis), the only one that imports redis-py.

- ``job_ledger``: when each job started and whether it reached a final outcome; ``stuck_jobs`` reads it (``hoptrace monitor``);
- ``keep_channel``: the flight recorder's channel, telling every process of the pipeline which jobs to keep;
- ``server``: ``hoptrace services status`` and the demo's requests.
"""
