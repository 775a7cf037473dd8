"""Google Cloud: Vertex AI submission, schedules, and published pipeline templates."""
