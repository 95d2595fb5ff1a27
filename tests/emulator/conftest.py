"""The emulator suite's fixtures, defined in emulator_support and made visible here."""

from emulator_support import (  # noqa: F401  (pytest finds fixtures by name)
    media_url,
    point_sdk,
    real,
    real_emulator,
    start,
)
