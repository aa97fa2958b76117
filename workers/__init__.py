"""The regional side: faust-streaming workers that fan the token stream into Redis."""
