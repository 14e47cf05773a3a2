"""dockyard: a Kubernetes-compatible container platform in Python."""

__version__ = "0.1.0"
