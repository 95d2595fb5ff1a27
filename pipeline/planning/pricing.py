"""Prices per model and the budget caps built from settings and flags.

Prices come only from the ``[prices]`` settings table (model -> per_hour or per_second and
a currency): they change and differ by region, so none are built in. The local engine has
no provider to pay, so its models cost 0 unless the table says otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable

from pipeline.errors import ConfigError, FailureCode
from pipeline.planning.budget import Caps
from pipeline.settings import Settings


def rate_of(settings: Settings, engine: str, model: str) -> tuple[float | None, str | None]:
    """(price per audio second, currency) of ``model``; (None, None) when unknown."""
    price = settings.prices.get(model)
    if price is not None:
        return price.rate_per_s, price.currency
    if engine == "local":
        return 0.0, None
    return None, None


def budget_caps(
    settings: Settings,
    engine: str,
    models: Iterable[str],
    *,
    max_audio_hours: float | None = None,
    max_cost: float | None = None,
) -> tuple[Caps, str | None]:
    """The caps for a run or batch (flags over ``budget.*`` settings) and the currency
    costs are counted in. A cost cap needs a price for every model the items use:
    ConfigError otherwise (a usage error at the CLI, exit 2)."""
    hours = max_audio_hours if max_audio_hours is not None else settings.budget.max_audio_hours
    cost = max_cost if max_cost is not None else settings.budget.max_cost
    return caps_for(settings, engine, models, max_audio_hours=hours, max_cost=cost)


def caps_for(
    settings: Settings,
    engine: str,
    models: Iterable[str],
    *,
    max_audio_hours: float | None,
    max_cost: float | None,
) -> tuple[Caps, str | None]:
    """Exactly these caps (no fallback to ``budget.*``), with the models' prices."""
    hours, cost = max_audio_hours, max_cost
    prices: dict[str, float] = {}
    currencies: set[str] = set()
    missing: list[str] = []
    for model in dict.fromkeys(models):
        rate, currency = rate_of(settings, engine, model)
        if rate is None:
            missing.append(model)
            continue
        prices[model] = rate
        if currency:
            currencies.add(currency)
    if cost is not None and missing:
        raise ConfigError(
            FailureCode.CONFIG_INVALID,
            f"--max-cost needs a price for {', '.join(missing)}: add it to the "
            "[prices] table of your settings (see README, Plan and budgets)",
        )
    if cost is not None and len(currencies) > 1:
        raise ConfigError(
            FailureCode.CONFIG_INVALID,
            f"--max-cost cannot add up prices in {', '.join(sorted(currencies))}",
        )
    caps = Caps(max_audio_s=None if hours is None else hours * 3600, max_cost=cost, prices=prices)
    return caps, (next(iter(currencies)) if currencies else None)
