"""sweeper's own tables (`models`), sessions and migrations (`db`), queries (`queries`)."""
