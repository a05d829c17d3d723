"""Hydra finds its plugins in the `hydra_plugins` namespace package: ours is an Optuna sweeper."""
