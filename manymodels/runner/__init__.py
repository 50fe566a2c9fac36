"""Where groups run: the run options, the session, the one scheduling loop, the engines, and what a worker does."""
