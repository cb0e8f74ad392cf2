"""Messages at rest: queues, their arguments, TTLs, limits and dead-lettering.

A leaf package: it imports the standard library and pamqp only. A queue never
routes; it *returns* dead-letter records and the virtual host re-routes them.
"""
