"""The local AWS IoT data plane: the sandbox CA, mosquitto with mutual TLS and policy-derived access
rules (broker.py, and its plugin in broker_plugin/), and the fleet-provisioning MQTT API."""
