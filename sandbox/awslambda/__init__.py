"""Lambda (moto's awslambda): functions run on local Python workers instead of Docker, invocation
throttling and metrics, and AddPermission that a retried request cannot apply twice."""
