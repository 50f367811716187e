"""Read projections: the log folded into stories, timelines and rendered documents."""
