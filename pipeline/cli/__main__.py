"""``python -m pipeline.cli ...``: the same as the ``bulkscribe`` console script."""

from pipeline.cli.app import main

main()
