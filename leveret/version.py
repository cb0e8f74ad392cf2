"""Which leveret this is, and which RabbitMQ it behaves as.

A leaf: every room may read it, and it imports nothing.
"""

__version__ = "0.1.0"

# The RabbitMQ release whose behaviour leveret copies, and reports where a
# client or a definitions file asks (server-properties, /api/overview, exports).
RABBITMQ_VERSION = "3.10.8"
