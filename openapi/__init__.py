"""The API documents, shipped with the package so an installed suite can serve them."""
