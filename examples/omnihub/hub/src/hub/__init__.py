"""Routes notifications to channels by rules."""
