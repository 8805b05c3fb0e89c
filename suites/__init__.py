"""The conformance suites: claims (catalog), strategies, error bounds and the checks that run them."""
