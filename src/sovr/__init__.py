"""sovr: an obligation clearing network on TigerBeetle's model of money."""

__version__ = "0.1.0"
