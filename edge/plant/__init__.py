"""Part of the plant: the appliance as PLCs, SCADA and a fleet's monitoring see it."""
