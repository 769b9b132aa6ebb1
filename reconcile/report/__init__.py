"""Rendering: pure functions from result records to text. Imports no torch."""
