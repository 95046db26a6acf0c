"""Day-2 operations: ps, exec, unit."""
