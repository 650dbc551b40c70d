"""Lifecycle hooks other parts of peapod attach to containers (NRI plugins, say).

``ContainerManager`` calls them at fixed points:

- ``creation`` is held from before ``create`` until the new container is published
  (or its build failed), so whoever takes a consistent snapshot of all containers
  can wait for creations in flight;
- ``create`` gets the generated OCI spec before the runtime sees it and returns the
  spec to use; raising fails CreateContainer (the build rolls back, then
  ``abandoned`` says the container is gone);
- ``start`` before the runtime starts the process (raising fails StartContainer);
- ``update`` gets the requested resources and returns those to apply (raising fails
  UpdateContainerResources);
- ``stopped`` once a container has stopped, whether by StopContainer or on its own
  (``wait`` makes the caller wait until the hook has run; otherwise it may run
  later), and ``remove`` before a container's state is deleted;
- ``post_create``, ``post_start`` and ``post_update`` after the fact.

Only ``create``, ``start`` and ``update`` may refuse; the others log their errors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

from oci.container.record import ContainerRecord
from oci.spec.inputs import Resources


class ContainerHooks(Protocol):
    def creation(self) -> contextlib.AbstractContextManager[None]: ...

    def create(self, rec: ContainerRecord, spec: dict[str, Any]) -> dict[str, Any]: ...

    def abandoned(self, rec: ContainerRecord) -> None: ...

    def post_create(self, rec: ContainerRecord) -> None: ...

    def start(self, rec: ContainerRecord) -> None: ...

    def post_start(self, rec: ContainerRecord) -> None: ...

    def update(self, rec: ContainerRecord, res: Resources) -> Resources: ...

    def post_update(self, rec: ContainerRecord) -> None: ...

    def stopped(self, rec: ContainerRecord, wait: bool) -> None: ...

    def remove(self, rec: ContainerRecord) -> None: ...


class NoContainerHooks:
    """Nothing attached."""

    @contextlib.contextmanager
    def creation(self) -> Iterator[None]:
        yield

    def create(self, rec: ContainerRecord, spec: dict[str, Any]) -> dict[str, Any]:
        return spec

    def abandoned(self, rec: ContainerRecord) -> None:
        pass

    def post_create(self, rec: ContainerRecord) -> None:
        pass

    def start(self, rec: ContainerRecord) -> None:
        pass

    def post_start(self, rec: ContainerRecord) -> None:
        pass

    def update(self, rec: ContainerRecord, res: Resources) -> Resources:
        return res

    def post_update(self, rec: ContainerRecord) -> None:
        pass

    def stopped(self, rec: ContainerRecord, wait: bool) -> None:
        pass

    def remove(self, rec: ContainerRecord) -> None:
        pass
