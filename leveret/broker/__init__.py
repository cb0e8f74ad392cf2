"""The broker core: virtual hosts, users and permissions, limits and definitions.

No I/O: the AMQP server (leveret.server), the management API and the
playground all drive it.
"""
