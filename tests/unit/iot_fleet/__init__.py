"""The stack's own package (constructs/iot_fleet): configuration, documents, claim keys; no synth."""
