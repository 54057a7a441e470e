"""router layer."""
