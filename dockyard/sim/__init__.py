"""Simulated nodes: many Node objects and fake kubelets in one process, for scale tests."""

from dockyard.sim.nodes import SimulatedNodes

__all__ = ["SimulatedNodes"]
