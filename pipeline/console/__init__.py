"""The operator console: pages, a JSON API and live counts over the ledger."""
