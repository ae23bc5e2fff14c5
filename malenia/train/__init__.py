"""Training loop, schedules, checkpoints, distributed launch."""
