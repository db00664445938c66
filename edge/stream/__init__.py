"""Live events: the fan-out hub, SSE framing, and one subscriber per /events connection."""
