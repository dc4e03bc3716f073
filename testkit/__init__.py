"""What the tests and the bench share to run Spark Control for real: `testkit.service`."""
