"""Human review in Argilla. Kept free of imports: the search-engine plugin runs inside argilla-server's venv."""
