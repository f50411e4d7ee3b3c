"""Foundation: config, Release manifest, errors and exit codes, console, locks, redaction, paths."""
