"""The sans-I/O TCP engine.

Nothing in this package performs I/O, reads a clock or imports asyncio: every
entry point takes the current time as ``now`` (seconds, any monotonic origin)
and the results are segments to send, events for the application, and the next
deadline at which the engine wants to be called again.
"""
