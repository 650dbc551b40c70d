"""Shared pytest fixtures. The logic lives in tests/support; this file only wires it up."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import replace

import pytest
from support.images import StandardImages, push_busybox, push_standard_images
from support.registry import AuthRegistry, Registry, registry_available
from support.token_proxy import TokenProxy, TokenRegistry


def _need_registry() -> None:
    if not registry_available():
        pytest.fail(
            "docker-registry is not installed; run deploy/setup.sh test (apt-get install "
            "docker-registry)"
        )


# -- registries and test images (session scope) --------------------------------


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    """A plain (no auth) docker-registry on 127.0.0.1."""
    _need_registry()
    with Registry() as reg:
        yield reg


@pytest.fixture(scope="session")
def auth_registry() -> Iterator[AuthRegistry]:
    """A htpasswd-protected docker-registry holding busybox:latest."""
    _need_registry()
    with Registry(username="peapod-user", password=secrets.token_urlsafe(12)) as reg:
        yield AuthRegistry(reg, push_busybox(reg.host, auth=reg.auth))


@pytest.fixture(scope="session")
def token_registry() -> Iterator[TokenRegistry]:
    """A bearer-token proxy in front of a plain registry holding busybox:latest."""
    _need_registry()
    with Registry() as backend, TokenProxy(backend.host, username="peapod-user") as proxy:
        busybox = push_busybox(backend.host)
        yield TokenRegistry(proxy, backend, replace(busybox, host=proxy.host))


@pytest.fixture(scope="session")
def test_images(registry: Registry) -> StandardImages:
    """The standard image set, pushed once per session to `registry`."""
    return push_standard_images(registry.host)
