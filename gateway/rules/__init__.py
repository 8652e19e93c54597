"""Pure loyalty rules: points, coupons; no I/O."""
