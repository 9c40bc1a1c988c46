"""Benchmarks behind `sovr bench …`: measurement functions that return plain results."""
