"""Runnable examples for teams calling the router directly."""
