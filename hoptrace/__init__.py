"""hoptrace composition root: the command line, local services and the demo wire the layers together."""
