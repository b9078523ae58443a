"""Lowering: PyTorch encoders -> float NIR chains -> Loihi fixed point (pure functions)."""
