"""After deployment: live quality per version from captured traffic and feedback, and the status view."""
