"""The stack's Lambda functions (lambda/*), each run in-process against moto."""
