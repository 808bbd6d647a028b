"""The spike branch of S-VRT: spike input, 3D-conv encoder, per-pixel temporal self-attention and
cross-attention fusion with the VRT backbone's encoder stages."""
