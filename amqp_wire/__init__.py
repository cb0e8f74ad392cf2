"""The AMQP 0-9-1 codec: framing, methods, replies, errors, field tables and
content properties.

The bottom room: sans-IO and without broker knowledge. It imports the standard
library and pamqp only; the server (leveret.server) drives it.
"""
