"""The conformance suites: claims (catalog), strategies, error bounds and the checks that run them."""

# depth and batch run every example many times over (up to 16 layers, or every sample on its own):
# their tests take the profile's number of examples divided by this
HEAVY_CHECK_DIVISOR = 5
