"""The sweep loop: claim -> ask -> launch -> watch -> report -> tell; resume; budgets."""
