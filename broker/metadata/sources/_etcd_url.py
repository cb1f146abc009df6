"""Where an etcd log lives: its URL (light; loads no etcd client)."""

from __future__ import annotations

from urllib.parse import urlsplit

from broker.errors import ConfigurationError

__all__ = ["DEFAULT_PREFIX", "parse_etcd_url"]

DEFAULT_PREFIX = "/broker/metadata/"
"""Key prefix of a log whose URL names none."""


def parse_etcd_url(url: str) -> tuple[str, int, str]:
    """``http://host:port/prefix`` -> (host, port, prefix); prefix defaults to
    /broker/metadata/, the port to 2379. Without a scheme, ``host:port`` needs its port
    (so that a stray word is refused rather than looked up as a host name)."""
    parts = urlsplit(url if "//" in url else f"http://{url}")
    if parts.scheme not in ("http", "etcd") or not parts.hostname:
        raise ConfigurationError(f"etcd URL {url!r} is not http://HOST:PORT[/PREFIX]")
    try:
        port = parts.port
    except ValueError:
        raise ConfigurationError(f"etcd URL {url!r} has a bad port") from None
    if port is None and "//" not in url:
        raise ConfigurationError(f"etcd URL {url!r} is not http://HOST:PORT[/PREFIX]")
    port = port or 2379
    prefix = parts.path if parts.path not in ("", "/") else DEFAULT_PREFIX
    return parts.hostname, port, prefix if prefix.endswith("/") else prefix + "/"
