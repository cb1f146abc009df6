"""The metadata cache: METADATA answers, failover check and stream metadata."""

__all__: list[str] = []
