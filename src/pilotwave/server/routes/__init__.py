"""HTTP routes, one module per resource; each translates HTTP to ``wms`` calls and back."""
