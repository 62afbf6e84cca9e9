"""The local sandbox: a local AWS (moto + what moto lacks) so the stack deploys with no AWS account."""
