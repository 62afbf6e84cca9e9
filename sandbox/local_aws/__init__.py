"""The local AWS: moto server behind the sandbox's HTTP front, Lambda run on local Python, and the
in-process view of its backends that the IoT data plane uses (account.py)."""
