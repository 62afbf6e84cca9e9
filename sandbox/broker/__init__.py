"""The sandbox broker's plugin: its C source and how it is built."""
