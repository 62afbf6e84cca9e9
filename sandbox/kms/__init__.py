"""KMS: whether a key policy lets an AWS service principal use a key."""
