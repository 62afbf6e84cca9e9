"""IoT data (moto's iotdata): Publish delivered to the sandbox broker's subscribers."""
