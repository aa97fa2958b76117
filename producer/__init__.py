"""The token authority: Sanctum-compatible token store, outbox relay, HTTP API."""
