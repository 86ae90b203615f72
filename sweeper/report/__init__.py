"""Reading a sweep: status, compare tables and exports, trial details, the HTML report."""
