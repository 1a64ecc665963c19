"""The edge runtime: sensors, the client to the cloud, the measurement log, inputs."""
