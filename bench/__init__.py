"""Benchmarks: ``tokensync bench SCENARIO``; each scenario starts the servers it needs,
compares against a baseline measured in the same run, writes JSON and a PNG."""
