"""The OCI image and distribution specs: references, manifests, registries, the image store."""
