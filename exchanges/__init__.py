"""Exchange types and the router that walks them.

Each type is a behaviour (exchanges.base) registered by its wire name; the
router walks exchanges, exchange-to-exchange bindings and alternate exchanges.
"""
