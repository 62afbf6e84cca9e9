"""IAM: the policy evaluator, and the one authority every part of the sandbox asks for a decision."""
