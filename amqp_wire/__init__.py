"""The AMQP 0-9-1 frontend: bytes in, broker calls, bytes out.

Sans-IO: `connection.Connection` takes bytes and produces bytes; asyncio lives
in `server.py` only.
"""
