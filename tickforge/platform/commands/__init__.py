"""Commands over the platform's kernels: read the inputs (IO), run the kernel, write or print."""
