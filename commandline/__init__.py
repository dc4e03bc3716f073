"""What every app's `manage.py` commands share: one base command, argument errors on one line, stdin tokens."""
