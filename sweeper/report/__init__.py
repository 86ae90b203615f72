"""The read side: status, compare, show and the HTML report. Never writes the database."""
