"""Pieces shared by every stage: the one config parser, atomic I/O, errors, device and seeding."""
