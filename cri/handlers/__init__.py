"""Per-rpc handlers. Each takes (services, request, grpc context) and returns a response.

``cri.routes`` maps rpc names to them.
"""
