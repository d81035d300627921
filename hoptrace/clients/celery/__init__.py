"""Everything hoptrace knows of Celery and kombu (with the Redis broker); the only folder that imports them.

- ``app``: the Celery app of a pipeline's stages; ``worker`` registers a stage per task and ``health`` reports it ready;
- ``visibility`` and ``redis_fetch``: a worker keeps what it holds visible and loses nothing when killed mid-fetch;
  ``unreadable``: a message that is no task is dead-lettered, not dropped;
- ``sender``: the publisher's sender (``producers.publisher.Sender``);
- ``instrumentor``, ``publish``, ``process``, ``chords``, ``depth``: the drop-in (``opentelemetry-instrument``);
- ``queue_depth``: depth and oldest age of the queues (``hoptrace monitor``); ``urls``: a broker URL shown without its password.

Celery's broker is Redis: ``redis_fetch``, ``visibility`` and ``queue_depth`` talk to it with redis-py too.
"""
