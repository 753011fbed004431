"""Long-running workers: thin loops around the platform's kernels, one module each."""
