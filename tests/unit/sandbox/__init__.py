"""The sandbox's parts (sandbox/), each in-process: moto patches, the local AWS, the IoT data plane."""
