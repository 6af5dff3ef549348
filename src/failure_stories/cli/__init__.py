"""`kfs`: one module per command group (main, audit, operator) and the options they
share."""
