"""The routing playground: a small language to declare a topology, publish and
watch where every message goes (`leveret play`), and run the same files as
tests (`leveret test`). See grammar.lark for the language."""
