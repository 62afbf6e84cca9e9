"""Constructs of the IoT fleet-provisioning stack (one construct per module)."""
