"""The ``bulkscribe`` command line.

* :mod:`~pipeline.cli.app`: the command group (``main``, the console script), ``run``, ``status``.
* :mod:`~pipeline.cli.shared`: what every command shares (exit statuses, settings, INPUTs).
* :mod:`~pipeline.cli.ops`: distributed-mode commands (submit, worker, beat, retry, ...).
* :mod:`~pipeline.cli.plan`: ``bulkscribe plan``.
* :mod:`~pipeline.cli.gc`: ``bulkscribe gc``.
* :mod:`~pipeline.cli.progress`: live progress on a terminal, plain lines otherwise.

The console's and notify's commands live in their packages (``console/cli.py``,
``notify/cli.py``) and are loaded by name only when invoked.
"""

from pipeline.cli.app import main

__all__ = ["main"]
