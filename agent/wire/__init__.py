"""The CUP-style POS ISO 8583 wire profile of DESIGN.md section 4."""
