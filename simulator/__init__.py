"""The synthetic log simulator: raw impression/click logs with a known click-probability oracle."""

from simulator.generator import Simulation, generate, oracle_auc, simulate

__all__ = ["Simulation", "generate", "oracle_auc", "simulate"]
