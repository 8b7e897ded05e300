"""Signalling: the relay protocol, its client and server, and an in-process link."""
