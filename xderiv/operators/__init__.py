"""The public operators, one module each: its function, cost row, chain kernel, Potential term,
composite rule and graph read-out."""
