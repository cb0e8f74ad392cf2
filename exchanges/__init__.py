"""Exchange types and the router that walks them.

Each type is a behaviour (exchanges.base) listed by its wire name in
exchanges.registry; the router walks exchanges, exchange-to-exchange bindings and alternate exchanges.
"""
