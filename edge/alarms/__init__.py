"""Alarms: rules, the engine that raises and clears them, their tables, and webhook delivery."""
