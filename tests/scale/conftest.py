"""The scale suite's fixtures, defined in scale_support (which the test modules import)."""

from scale_support import broker_url, env, moto_url, pg_url  # noqa: F401
