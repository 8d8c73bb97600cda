"""carelens: triage of customer messages (the CLI lives here; the code in model/, training/, serving/)."""

__version__ = "0.1.0"
