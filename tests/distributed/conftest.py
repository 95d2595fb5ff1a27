"""The distributed suite's session fixtures (services, emulator, clips) and the per-test
cluster, defined in dist_support and made visible to every test module here."""

from dist_support import (  # noqa: F401  (pytest finds fixtures by name)
    clips,
    cluster,
    emulator,
    ledger,
    moto_url,
    pg_url,
    redis_server,
)
