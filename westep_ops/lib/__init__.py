"""Pure analysis code (pandas), testable alone: the SLA maths."""
