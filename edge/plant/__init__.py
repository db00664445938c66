"""The plant's other protocols (Socket.IO for FD-REST's pages, ...), each off until its setting turns it on."""
