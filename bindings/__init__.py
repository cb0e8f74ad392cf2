"""What a binding is and how binding keys match routing keys and headers.

A leaf package: it imports the standard library and pamqp only.
"""
