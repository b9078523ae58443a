"""Trainable spiking networks (PyTorch)."""
