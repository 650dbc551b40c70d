"""Support code for peapod's tests: a real registry, auth fronts, bad servers, test images."""
