"""Example pipelines that ship with hoptrace (``hoptrace demo`` runs ``hoptrace.examples.orders``)."""

if __name__ != "hoptrace.examples":  # the repository folder is mapped into the package; one name per module
    raise ImportError(f"import this as hoptrace.examples, not {__name__}: hoptrace installs one top-level name, hoptrace")
