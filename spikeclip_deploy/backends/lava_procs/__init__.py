"""Custom Lava processes (in their own folder: Lava scans a process's folder for its models)."""
