"""The management API's resources, one module each, every one with its `ROUTES` rows.

overview (overview, nodes, whoami, health checks), vhosts, queues, exchanges,
bindings, connections (connections, channels, consumers), definitions.
"""
