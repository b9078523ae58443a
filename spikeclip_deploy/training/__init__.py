"""Training: the offline teacher's image tower, then SpikeCLIP's two stages."""
