"""Key families (DES/3DES and SM4) and what follows from a slot's family (DESIGN.md section 18)."""
