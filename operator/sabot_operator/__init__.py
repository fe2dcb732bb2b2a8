"""Sabot operator: the SabotJob CRD, pure manifest builders, status logic and thin kopf handlers."""

__version__ = "0.1.0"
