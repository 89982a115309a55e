"""NautilusTrader integration: the simulated L2 venue that fills paper orders."""
