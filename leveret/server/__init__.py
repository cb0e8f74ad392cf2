"""The AMQP 0-9-1 server: the sans-IO connection and channel state machines,
and the asyncio shell (shell.py, the only asyncio) that feeds them sockets.
"""
