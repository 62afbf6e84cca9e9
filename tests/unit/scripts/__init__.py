"""The operator and deploy tools (scripts/): fleet, deploy, the device client's files."""
