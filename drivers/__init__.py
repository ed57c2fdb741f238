"""Card (security) module drivers: the module interface, its serial implementation, drivers by
entry point, and the conformance run that proves a module or a driver."""
