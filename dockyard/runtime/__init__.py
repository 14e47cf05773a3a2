"""Images, root filesystems, OCI bundles and the OCI runtimes (runc) that run containers."""
