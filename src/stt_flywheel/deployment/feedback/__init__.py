"""The feedback service: corrections over HTTP and Pub/Sub push, into the error store."""

from stt_flywheel.deployment.feedback.app import (
    FeedbackAnswer,
    build_feedback_app,
    feedback_openapi,
    run_feedback_service,
)

__all__ = ["FeedbackAnswer", "build_feedback_app", "feedback_openapi", "run_feedback_service"]
