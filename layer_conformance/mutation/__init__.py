"""Mutation testing of the suite itself, in one place: does a check catch the fault it exists for?

* `faults`: framework-level faults (a transposed kernel, a dropped bias, TF32 inputs, a one-element
  perturbation, ...) and benign perturbations (a reversed sum order, one ulp), each a monkeypatch of
  a framework op with an uninstaller;
* `plugin`: `--conformance-fault ID` installs one for a whole pytest run (workers included);
* `score`: `conformance faults` runs the suites under each fault and prints the mutation score;
* `planting`: an adapter wrapper whose layers compute something else, for self-tests that prove a
  check's detection power without patching a framework.
"""
