"""A local Ray cluster plus real Redis: the actors, the CLI runs, the HTTP app."""
