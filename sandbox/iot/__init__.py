"""IoT's control plane (moto's iot): the APIs moto lacks, the registry rules AWS enforces, certificates
from the sandbox CA, indexed and thread-safe registry lookups, and the count of registry writes."""
