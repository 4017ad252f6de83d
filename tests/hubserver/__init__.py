"""A local Hugging Face hub for the tests: real clients (``datasets``, ``huggingface_hub``,
``tokenizers``, motlab) talk HTTP to it through ``HF_ENDPOINT``; it can inject network faults.

    python -m tests.hubserver --data ../shared/data --tokenizer ../shared/tokenizers/gpt2 --port 0

prints the URL to put in ``HF_ENDPOINT``. See :mod:`tests.hubserver.server` for the routes and
:mod:`tests.hubserver.faults` for ``--faults``.
"""

from .faults import FaultPlan, parse_spec
from .server import Hub, HubHTTPServer, build_hub, serve

__all__ = ["FaultPlan", "Hub", "HubHTTPServer", "build_hub", "parse_spec", "serve"]
