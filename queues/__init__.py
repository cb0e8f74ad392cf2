"""Messages at rest: the queue, its message, its arguments and dead-letter rewriting.

A queue never routes; it *returns* dead-letter records and the virtual host
re-routes them. It imports the codec (leveret.amqp_wire), the clock and the
standard library only.
"""
