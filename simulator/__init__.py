"""FD-Edge's virtual machine: FD-REST's 35 features from fault intensities and physics.

Only numpy is needed at run time, so the appliance's runtime install can stream
simulated readings; SIGNATURES.md documents what each fault does to the features.
"""

from simulator.conditions import PROFILES, Conditions, fixed_conditions, sample_conditions
from simulator.machine import Reading, VirtualMachine
from simulator.physics import quantize, simulate
from simulator.scenarios import SCENARIOS, Scenario, Trend

__all__ = [
    "PROFILES", "SCENARIOS", "Conditions", "Reading", "Scenario", "Trend", "VirtualMachine",
    "fixed_conditions", "quantize", "sample_conditions", "simulate",
]
