"""The plant integrations: MQTT in and out, Modbus TCP for PLCs, Socket.IO for FD-REST's pages.

Each is off unless its setting turns it on, and imports its library only then."""
