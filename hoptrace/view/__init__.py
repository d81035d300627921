"""The viewer: what ``hoptrace watch``, ``traces``, ``trace`` and ``demo`` run, never a user's worker.

An OTLP receiver and its decoding, the SQLite store and its queries, the
Jaeger reader, and the rendering of traces and stage tables. It imports nothing of the ground
floor but its names module (``hoptrace.pipeline.semconv``); nothing below the command line
imports it.
"""
