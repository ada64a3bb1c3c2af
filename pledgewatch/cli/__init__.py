"""The ``pledgewatch`` command line (Typer): ``main`` is the root, one module per command group."""
