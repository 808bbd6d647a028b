"""VRT's building blocks, one concept per module (windows, positions, attention, MLP, TMSA, flow
warping, SpyNet, deformable alignment (convolution or attention), stages)."""
