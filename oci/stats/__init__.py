"""Container and pod statistics: cgroup figures, CPU rates, writable layers, pod networks."""
