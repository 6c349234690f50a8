import implicitbias  # noqa: F401  (switches on float64)
