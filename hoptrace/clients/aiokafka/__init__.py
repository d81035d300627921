"""Everything hoptrace knows of aiokafka; the only folder that imports it (``pip install 'hoptrace[aiokafka]'``).

- ``instrumentor`` and ``traced_clients``: the drop-in (``opentelemetry-instrument``); hoptrace's own stages do not run on aiokafka.
"""
