"""NRI's events, their subscription bits and the methods that carry them."""

from __future__ import annotations

from api import nri_pb2

E = nri_pb2.Event
RUN_POD = E.Value("RUN_POD_SANDBOX")
STOP_POD = E.Value("STOP_POD_SANDBOX")
REMOVE_POD = E.Value("REMOVE_POD_SANDBOX")
CREATE = E.Value("CREATE_CONTAINER")
POST_CREATE = E.Value("POST_CREATE_CONTAINER")
START = E.Value("START_CONTAINER")
POST_START = E.Value("POST_START_CONTAINER")
UPDATE = E.Value("UPDATE_CONTAINER")
POST_UPDATE = E.Value("POST_UPDATE_CONTAINER")
STOP = E.Value("STOP_CONTAINER")
REMOVE = E.Value("REMOVE_CONTAINER")
UPDATE_POD = E.Value("UPDATE_POD_SANDBOX")
POST_UPDATE_POD = E.Value("POST_UPDATE_POD_SANDBOX")
VALIDATE = E.Value("VALIDATE_CONTAINER_ADJUSTMENT")
LAST = E.Value("LAST")

ALL = (1 << (LAST - 1)) - 1  # every valid event's bit: event n is bit n-1

# The Plugin service method that carries each event.
METHODS = {
    RUN_POD: "RunPodSandbox", STOP_POD: "StopPodSandbox", REMOVE_POD: "RemovePodSandbox",
    CREATE: "CreateContainer", POST_CREATE: "PostCreateContainer",
    START: "StartContainer", POST_START: "PostStartContainer",
    UPDATE: "UpdateContainer", POST_UPDATE: "PostUpdateContainer",
    STOP: "StopContainer", REMOVE: "RemoveContainer",
    UPDATE_POD: "UpdatePodSandbox", POST_UPDATE_POD: "PostUpdatePodSandbox",
    VALIDATE: "ValidateContainerAdjustment",
}

# Events whose method a plugin built against an older NRI may lack: they then go to
# StateChange, as upstream does.
STATE_CHANGE_FALLBACK = frozenset({
    RUN_POD, STOP_POD, REMOVE_POD, POST_CREATE, START, POST_START, POST_UPDATE, REMOVE,
    POST_UPDATE_POD,
})


def bit(event: int) -> int:
    return 1 << (event - 1)


def names(mask: int) -> list[str]:
    """The methods of the events set in ``mask``."""
    return [METHODS[e] for e in sorted(METHODS) if mask & bit(e)]
