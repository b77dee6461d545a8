"""Asset Classes API: reference data and cashflow projections for structured-credit collateral."""

__version__ = "1.0.0"
