"""OCI: the image side (image/), runtime-spec generation (spec/), the container lifecycle."""
