"""The fault suite: real worker processes and brokers of its own, killed, stopped and cut off.

For each fault: jobs lost, duplicated, and how long until the last one was done. Run it with
``python -m pytest tests/faults -q`` (about 15 minutes); ``make test`` skips it.
"""
