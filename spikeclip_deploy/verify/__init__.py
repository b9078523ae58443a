"""Hardware-in-the-loop verification and the energy report."""
