"""A local, faithful stand-in for the MoEngage Data API, plus a tiny Schema Registry.

``create_app``/``serve``/``run`` give the Bulk Import and Get User APIs with the seeds' error
bodies, per-minute budgets and injectable faults; ``create_registry_app``/``serve_registry`` give
enough of the Confluent Schema Registry REST API for the demo and the tests.
"""

from connector.sandbox.registry import create_registry_app, serve_registry
from connector.sandbox.rules import ApiError
from connector.sandbox.server import create_app, run, serve
from connector.sandbox.state import SandboxSettings, SandboxState

__all__ = [
    "ApiError",
    "SandboxSettings",
    "SandboxState",
    "create_app",
    "create_registry_app",
    "run",
    "serve",
    "serve_registry",
]
