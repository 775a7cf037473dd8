"""Local stand-ins of the cloud APIs the tests drive with the real Google client libraries."""
