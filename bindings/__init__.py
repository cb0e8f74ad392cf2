"""What a binding is and how binding keys match routing keys and headers:
binding values and the indexes that match them.

It imports the standard library and pamqp only.
"""
