"""The local fine-tuning service: a Nebius-compatible API on loopback whose jobs really train."""
