"""The course: graders and helpers the notebooks use."""
