"""NRI, the node resource interface: the runtime side of containerd/nri's protocol.

Plugins connect to peapod's NRI socket (or are launched from a plugin directory),
register, are configured and synchronized, then take part in the lifecycle of every
pod and container: they see the events they subscribed to and may adjust containers
as they are created, or update and evict others. This package sits between ``cri``
(which wires it up) and ``oci``/``sandbox`` (whose lifecycle it hooks into).

It is the one domain package that handles protobuf: its own wire messages
(``api.nri_pb2``, ``api.ttrpc_pb2``), never the CRI's and never gRPC.
"""
