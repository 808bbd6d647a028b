"""Command-line interfaces: ``svrt-data`` (data preparation) and ``svrt-model`` (training and evaluation)."""
