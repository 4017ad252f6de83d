"""Can the Hugging Face hub be reached? Asked by the data module, the tokenizer and zero-shot.

``huggingface_hub`` retries for ~25 s before it gives up on an unreachable hub; a motlab command
should instead say within seconds that it cannot reach the hub and what to use instead. The
probe is a TCP connect with a short timeout, skipped where the user switched the hub off (the
answer is known) or sits behind an HTTP proxy (a direct connection says nothing).

A hub that accepts connections may still answer slowly, refuse access or lack the repository:
:func:`check_repo` asks for the repository's info over HTTP within a timeout, and
:func:`translate` turns what the hub's clients raise into one motlab error that says what to
do (wait longer, log in, or fix a misspelt name).
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse


class HubUnreachableError(ConnectionError):
    """The Hugging Face hub cannot be reached (offline mode, no network, or a failed request)."""


class HubAccessError(HubUnreachableError):
    """The hub refused access (401/403): a gated or private repository, and no login for it."""


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
    for module, name in (
        ("httpx", "TransportError"),  # huggingface_hub 1.x
        ("httpx2", "TransportError"),  # huggingface_hub 2.x
        ("requests", "ConnectionError"),  # huggingface_hub < 1
    ):
        try:
            errors.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


LOGIN_HINT = (
    "log in with `huggingface-cli login` (or set HF_TOKEN to a token with access), after "
    "accepting its terms on its hub page if it is gated"
)


def endpoint() -> str:
    """The hub the clients talk to: ``HF_ENDPOINT``, or the public hub."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def explain(error: BaseException, what: str, option: str, timeout: float | None = None) -> str:
    """Why the hub did not serve ``what`` (e.g. ``"dataset 'allenai/c4'"``), for the user: a
    hub too slow to answer, 401/403 (gated or private: log in), or 404 (a misspelt ``option``).
    The hub answers 401 for a repository that does not exist too when nobody is logged in."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    where = f"the hub at {endpoint()}"
    status = getattr(getattr(error, "response", None), "status_code", None)
    if "Timeout" in type(error).__name__:
        slow = f"within {timeout:g} s" if timeout else "in time"
        return (
            f"{where} did not answer {slow} when asked for {what} ({type(error).__name__}): "
            "it is overloaded or the network is slow. Try again later, or wait longer with "
            "--data.hub_timeout"
        )
    if isinstance(error, GatedRepoError) or status == 403:
        token = "the token sent has no access to it; " if status == 403 else ""
        return (
            f"{where} refused access to {what} (HTTP {status}, gated or private): "
            f"{token}{LOGIN_HINT}"
        )
    if isinstance(error, RepositoryNotFoundError) or status == 404:
        private = f"; if it is private, {LOGIN_HINT}" if status == 401 else ""
        return f"{where} has no {what} (HTTP {status}): check {option}{private}"
    if status == 401:
        return f"{where} refused access to {what} (HTTP 401): {LOGIN_HINT}"
    lines = str(error).strip().splitlines()
    return f"{where} could not serve {what}: {lines[0] if lines else type(error).__name__}"


def translate(
    error: BaseException, what: str, option: str, timeout: float | None = None, hint: str = ""
) -> OSError | None:
    """The motlab error for a hub client's ``error``, or None if it is not about the hub:
    :class:`HubAccessError` (401/403), ``FileNotFoundError`` (no such repository: ``option``),
    :class:`HubUnreachableError` (slow, down or failing; ``hint`` says what to use instead)."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    message = explain(error, what, option, timeout)
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, GatedRepoError) or status == 403:
        return HubAccessError(message)
    if isinstance(error, RepositoryNotFoundError) or status == 404:
        return FileNotFoundError(message)
    if status == 401:
        return HubAccessError(message)
    if isinstance(error, (HfHubHTTPError, *connection_errors())):
        return HubUnreachableError(f"{message}. {hint}".strip())
    return None


def check_repo(repo_id: str, repo_type: str, option: str, timeout: float, hint: str = "") -> None:
    """Ask the hub for ``repo_id``'s info within ``timeout`` seconds (a TCP connect says nothing
    about a hub that accepts connections but answers slowly or not at all); raise the error of
    :func:`translate` if it is slow, refuses access or has no such repository."""
    from huggingface_hub import HfApi

    try:
        HfApi().repo_info(repo_id, repo_type=repo_type, timeout=timeout)
    except Exception as e:
        error = translate(e, f"{repo_type} {repo_id!r}", option, timeout, hint)
        if error is None:
            raise
        raise error from e
