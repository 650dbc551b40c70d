"""The OCI runtime spec: a container's config.json generated from a CRI request."""
