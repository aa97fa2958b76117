"""The error tree: one root, a shallow set of typed failures.

Expected outcomes (a token is invalid, an event is a duplicate) are values, not
exceptions; these classes are for what went wrong.
"""

from __future__ import annotations

__all__ = [
    "CacheUnavailableError",
    "ConfigError",
    "DependencyError",
    "EventDecodeError",
    "NotFoundError",
    "PrerequisiteError",
    "PublishError",
    "SignatureError",
    "StackError",
    "StoreError",
    "TokenSyncError",
    "UsageError",
]


class TokenSyncError(Exception):
    """Raised for any failure tokensync itself reports; the root of the tree."""


class ConfigError(TokenSyncError):
    """Raised when a setting is missing, malformed or contradicts another."""


class UsageError(TokenSyncError):
    """Raised when a caller passes input that cannot be acted on (bad time, empty ability)."""


class NotFoundError(TokenSyncError):
    """Raised when a named thing (token id, region) does not exist."""


class DependencyError(TokenSyncError):
    """Raised when an installed library lacks an internal tokensync relies on (faust, aiokafka)."""


class PrerequisiteError(TokenSyncError):
    """Raised when a program tokensync needs (java, mvn, redis-server) is not installed."""


class StackError(TokenSyncError):
    """Raised when a process of the local stack cannot be started, reached or stopped."""


class StoreError(TokenSyncError):
    """Raised when the token store's database fails or rejects a write."""


class PublishError(TokenSyncError):
    """Raised when the relay cannot hand a record to Kafka."""


class EventDecodeError(TokenSyncError):
    """Raised when a record's bytes are not a well-formed event of a known schema version."""


class SignatureError(EventDecodeError):
    """Raised when a record's signature is missing, wrong, or made with an unknown key."""


class CacheUnavailableError(TokenSyncError):
    """Raised when a region's Redis cannot be reached."""
