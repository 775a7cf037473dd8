"""Evaluation: candidate against production on the same utterances, the gates, and the HTML reports."""
