"""The path every HTTP request to the local AWS takes before moto sees it: the HTTP front (persistent
connections, at-most-once writes, the sandbox's own /_sandbox paths), the IAM check of a function's
calls, and the fault switch."""
