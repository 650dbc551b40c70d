"""Base types every layer uses: domain errors, call context and cancellation, the database."""
