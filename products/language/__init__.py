"""The product language compiler (spec ``query`` → polars plans → OpenDP measurement)."""
