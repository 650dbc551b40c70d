"""peapod's CRI layer: daemon, configuration, gRPC servicers, metrics."""

import os

# grpc's fork handlers crash children forked from a server process; peapod only
# uses subprocess (vfork/exec), so switch them off before grpc is imported.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "0"

__version__ = "0.1.0"
