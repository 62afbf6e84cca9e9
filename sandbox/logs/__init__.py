"""CloudWatch Logs: the KMS key association calls moto lacks."""
