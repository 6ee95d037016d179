"""Training: one loop (`loop.py`) that every stage uses; a stage is its parameters, its loss and its data."""
