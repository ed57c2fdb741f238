"""pos-agent: keeps a CUP-style POS terminal registered with its acquirer."""

__version__ = "0.2.0"
