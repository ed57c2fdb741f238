"""Card (security) module drivers: the module interface and its serial implementation."""
