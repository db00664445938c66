"""FD-Edge runtime: the appliance that scores and stores sensor readings. ARCHITECTURE.md maps its rooms."""
