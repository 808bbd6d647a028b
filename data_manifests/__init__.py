"""Versioned descriptions of known raw dataset layouts (one YAML file each); read by svrt_data.manifests."""
