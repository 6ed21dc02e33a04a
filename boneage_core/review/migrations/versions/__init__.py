"""The review log's revisions, oldest first: ``0001_baseline`` creates the schema of the first
versioned release."""
