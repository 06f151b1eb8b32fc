"""Converters between foreign checkpoint formats and swinzoo's canonical (official) keys."""
