"""Signed webhooks for batch events, delivered from an outbox in the ledger.

An event is written to the ``notify_outbox`` table in the same transaction as the state
change that causes it (a batch closed, an item moved to DEAD, a scheduled run's batch
created), one row per endpoint, and delivered from there at least once with a stable
``webhook-id``.

* :mod:`~pipeline.notify.events`: pure payload builders (the Standard Webhooks envelope).
* :mod:`~pipeline.notify.policy`: pure retry decisions (schedule, Retry-After, 410).
* :mod:`~pipeline.notify.signing`: ``webhook-*`` headers, signed with ``standardwebhooks``.
* :mod:`~pipeline.notify.outbox`: the ledger tables: enqueue, claim, record, list, replay.
* :mod:`~pipeline.notify.delivery`: HTTP through the download address policy.
* :mod:`~pipeline.notify.hooks`: where ``run``, ``submit`` and schedules call in.
* :mod:`~pipeline.notify.cli`: ``bulkscribe notify list | replay``.

The tables are defined with the ledger's (``pipeline/ledger/tables.py``, migration 0005).
"""

from __future__ import annotations
