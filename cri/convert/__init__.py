"""Conversions between CRI protobuf messages and domain types, and list-response caches."""
