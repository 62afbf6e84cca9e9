"""CloudWatch: metrics (with what CloudWatch Logs extracts from EMF log lines) and alarms evaluated on
sandbox time, which moto stores and never evaluates."""
