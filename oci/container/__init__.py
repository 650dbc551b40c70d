"""The container lifecycle over an OCI runtime (runc, crun) and its conmon monitor."""
