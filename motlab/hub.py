"""Can the Hugging Face hub be reached? Asked by the data module, the tokenizer and zero-shot.

``huggingface_hub`` retries for ~25 s before it gives up on an unreachable hub; a motlab command
should instead say within seconds that it cannot reach the hub and what to use instead. The
probe is a TCP connect with a short timeout, skipped where the user switched the hub off (the
answer is known) or sits behind an HTTP proxy (a direct connection says nothing).
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse


class HubUnreachableError(ConnectionError):
    """The Hugging Face hub cannot be reached (offline mode, no network, or a failed request)."""


def hub_offline() -> bool:
    """True when the user switched the hub off (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``)."""
    truthy = {"1", "true", "yes", "on"}
    return any(
        os.environ.get(v, "").strip().lower() in truthy
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def probe_hub(timeout: float = 5.0) -> str | None:
    """Return why the hub is unreachable, or None if it looks reachable."""
    if hub_offline():
        return "offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set)"
    proxies = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
    if any(os.environ.get(v) for v in proxies):
        return None
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"cannot connect to {host}:{port} ({e})"
    return None


def check_hub(what: str, hint: str) -> None:
    """Raise :class:`HubUnreachableError` within seconds, saying ``what`` needed the hub and
    ``hint`` (what to use instead), if the hub cannot be reached."""
    reason = probe_hub()
    if reason is not None:
        raise HubUnreachableError(f"cannot {what} from the Hugging Face hub: {reason}. {hint}")


def connection_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "could not talk to the hub" across datasets/hf_hub versions."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError, socket.gaierror]
    try:
        from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

        errors += [LocalEntryNotFoundError, OfflineModeIsEnabled]
    except ImportError:  # pragma: no cover - older huggingface_hub
        pass
    for module, name in (("httpx", "TransportError"), ("requests", "ConnectionError")):
        try:
            errors.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)
