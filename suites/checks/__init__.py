"""The checks, one module each; every one a pure function from an example to an outcome.

    forward.evaluate_example   every variant's output against the float64 reference (ExampleOutcome)
    gradient.check_gradient    d input, d kernel, d bias against the reference VJP (CheckOutcome)
    depth.check_depth          stacks of up to 16 layers against the composed bound (CheckOutcome)
    batch.check_batch          a batch against its samples one at a time, and determinism (CheckOutcome)
    params.check_params        parameter counts at the claim's example sizes (ParamsOutcome)
    init.check_init            default initializers against their documented distributions (InitOutcome)

A check takes the row (Case), the example hypothesis drew and the variants that run, and returns what it
found. It knows nothing of pytest: it raises no skip, keeps no books, writes no files and touches no report
record; `layer_conformance.suites.harness.ClaimRunner` does all of that from the outcome. `common` holds what
the checks share.
"""
