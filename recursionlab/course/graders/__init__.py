"""Exercise graders: one module per lesson (see recursionlab.course.checks)."""
