"""The gRPC server: services, auth, metrics and the process that runs them."""
