"""Storage: one object store over a directory or gs://, leases on it, and atomic local file writes."""
