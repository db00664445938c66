"""`python -m bench` (`make bench`): FD-Edge's benchmarks, measured as ratios in one run.

The machines this runs on are shared and noisy, so every comparison is measured A/B
interleaved in the same run and reported as a ratio of medians; absolute figures are
printed too but only the ratios carry across machines.
"""
