"""Example pipelines: the demo and the docs use them."""
