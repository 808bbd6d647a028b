"""The training loader: clips of an svrt store as a torch Dataset, their plan, reading, transforms and batching."""
