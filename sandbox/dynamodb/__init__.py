"""DynamoDB: atomic conditional writes, update expressions parsed once, and the GetItem and UpdateItem
fast path."""
