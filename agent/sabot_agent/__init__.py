"""Sabot shuffle agent: Arrow Flight shuffle, partition store, job runner and the local mode."""

__version__ = "0.1.0"
